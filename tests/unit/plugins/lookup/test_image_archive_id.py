"""The image_archive_id lookup (plugins/lookup/image_archive_id.py), called as Ansible calls it."""
import io
import json
import tarfile

import pytest
from ansible.errors import AnsibleLookupError

from ansible_collections.modelops.serving.plugins.lookup.image_archive_id import LookupModule


def _save_tarball(path, config):
    manifest = json.dumps([{"Config": config, "RepoTags": ["modelops/iris:1"], "Layers": ["l/layer.tar"]}]).encode()
    with tarfile.open(path, "w") as tar:
        layer = b"x" * 4096
        info = tarfile.TarInfo("l/layer.tar")
        info.size = len(layer)
        tar.addfile(info, io.BytesIO(layer))
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
    return str(path)


@pytest.fixture
def lookup():
    return LookupModule()


def test_it_returns_one_image_id_per_archive_in_both_save_formats(lookup, tmp_path):
    old = _save_tarball(tmp_path / "old.tar", "0a1b2c.json")
    oci = _save_tarball(tmp_path / "oci.tar", "blobs/sha256/3d4e5f")
    assert lookup.run([old, oci], variables={}) == ["sha256:0a1b2c", "sha256:3d4e5f"]


def test_an_unreadable_or_absent_archive_fails_naming_it(lookup, tmp_path):
    junk = tmp_path / "iris-v2.tar"
    junk.write_bytes(b"not a tarball")
    with pytest.raises(AnsibleLookupError, match="iris-v2.tar is not a readable docker save tarball"):
        lookup.run([str(junk)], variables={})
    with pytest.raises(AnsibleLookupError, match="absent.tar"):
        lookup.run([str(tmp_path / "absent.tar")], variables={})
