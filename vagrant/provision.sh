#!/bin/bash
# Provisions the Vagrant VM: DevStack as user `stack`, then scalp-bpf from /scalp-bpf.
set -euxo pipefail

apt-get update
apt-get install -y git curl build-essential pkg-config

# DevStack, minimal: the services whose SQL, syscalls and I/O scalp-bpf is for.
if ! id stack >/dev/null 2>&1; then
    useradd -s /bin/bash -d /opt/stack -m stack
    echo "stack ALL=(ALL) NOPASSWD: ALL" > /etc/sudoers.d/stack
fi
if [ ! -d /opt/stack/devstack ]; then
    sudo -u stack git clone https://opendev.org/openstack/devstack /opt/stack/devstack
fi
cat > /opt/stack/devstack/local.conf <<'CONF'
[[local|localrc]]
ADMIN_PASSWORD=secret
DATABASE_PASSWORD=secret
RABBIT_PASSWORD=secret
SERVICE_PASSWORD=secret
DATABASE_TYPE=mysql
disable_service horizon tempest
CONF
chown stack: /opt/stack/devstack/local.conf
if [ ! -f /opt/stack/.stacked ]; then
    sudo -u stack -H bash -c 'cd /opt/stack/devstack && ./stack.sh'
    touch /opt/stack/.stacked
fi

# Rust and scalp-bpf (the demo command installs rust-src and bpf-linker itself).
if ! command -v cargo >/dev/null; then
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi
source "$HOME/.cargo/env"
cd /scalp-bpf
cargo xtask demo
echo "try: sudo /scalp-bpf/target/release/scalp-bpf run --pid nova-api --pid glance-api --duration 1m"
