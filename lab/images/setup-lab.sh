#!/bin/bash
# Runs inside the debootstrapped root (chroot) before `docker import`.
set -euo pipefail
mirror="$1"; suite="$2"
cat > /etc/apt/sources.list <<SRC
deb $mirror $suite main contrib non-free non-free-firmware
deb $mirror $suite-updates main contrib non-free non-free-firmware
SRC
# A freshly installed server has current package lists; so do lab hosts.
apt-get update -qq
# Containers have no consoles or hardware to wait for.
for unit in getty.target console-getty.service systemd-udevd.service \
            systemd-udev-trigger.service systemd-modules-load.service \
            sys-kernel-config.mount sys-kernel-debug.mount \
            systemd-remount-fs.service systemd-firstboot.service \
            apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do
  ln -sf /dev/null "/etc/systemd/system/$unit"
done
# sshd: keys only; host keys are generated at first boot of each host.
rm -f /etc/ssh/ssh_host_*
mkdir -p /etc/systemd/system/ssh.service.d
cat > /etc/systemd/system/ssh.service.d/hostkeys.conf <<UNIT
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
UNIT
cat > /etc/ssh/sshd_config.d/lab.conf <<CONF
PasswordAuthentication no
PermitRootLogin prohibit-password
UseDNS no
CONF
# Lab hosts are containers whose /proc/sys is read-only (Docker cannot grant
# otherwise without --privileged, which fails here). Docker >= 26 then fails to
# disable IPv6 on its containers' interfaces unless told to carry on.
mkdir -p /etc/systemd/system/docker.service.d
cat > /etc/systemd/system/docker.service.d/lab-nested.conf <<UNIT
[Service]
Environment=DOCKER_ALLOW_IPV6_ON_IPV4_INTERFACE=1
UNIT
# The Ansible user of the lab, like a real fleet's: key login, passwordless sudo.
useradd --create-home --shell /bin/bash --groups sudo ansible
echo 'ansible ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/ansible
chmod 0440 /etc/sudoers.d/ansible
install -d -m 0700 -o ansible -g ansible /home/ansible/.ssh
echo 'lab' > /etc/hostname
apt-get clean
rm -rf /var/cache/apt/*.bin /usr/share/doc/* /usr/share/man/* /var/log/*.log
