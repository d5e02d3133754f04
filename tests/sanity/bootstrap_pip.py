# Our stand-in for ansible-test's pip bootstrap script. ansible-test downloads
# that script from a host our machines cannot reach and documents that it may
# be placed in its cache by hand; tests/sanity.sh puts this file there.
# It installs pip from the standard library's bundled wheel, then the packages
# ansible-test asks for, from the configured package index.
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
subprocess.check_call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check"] + args)
