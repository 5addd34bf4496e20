//! A process's open file descriptors: files by path, and sockets with their endpoints (TCP and
//! UDP from the process's network namespace, Unix sockets by path).

use std::collections::HashMap;

use procfs::process::{FDTarget, Process};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct OpenFile {
    pub fd: i32,
    /// file, socket, pipe, anon_inode, memfd, other.
    pub kind: &'static str,
    /// The path, or what /proc names the descriptor.
    pub target: String,
    pub socket: Option<Socket>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Socket {
    /// tcp, tcp6, udp, udp6, unix.
    pub protocol: &'static str,
    pub local: String,
    /// The peer (`None` for listening, unconnected and Unix sockets).
    pub remote: Option<String>,
    pub state: String,
}

/// Every descriptor of `process`, by number.
pub fn read(process: &Process) -> Vec<OpenFile> {
    let Ok(fds) = process.fd() else {
        return Vec::new();
    };
    let sockets = sockets(process);
    let mut out: Vec<OpenFile> = fds
        .flatten()
        .map(|fd| {
            let (kind, target, socket) = match fd.target {
                FDTarget::Path(p) => ("file", p.display().to_string(), None),
                FDTarget::Socket(inode) => (
                    "socket",
                    format!("socket:[{inode}]"),
                    sockets.get(&inode).cloned(),
                ),
                FDTarget::Net(inode) => ("socket", format!("net:[{inode}]"), None),
                FDTarget::Pipe(inode) => ("pipe", format!("pipe:[{inode}]"), None),
                FDTarget::AnonInode(name) => ("anon_inode", name, None),
                FDTarget::MemFD(name) => ("memfd", name, None),
                FDTarget::Other(name, inode) => ("other", format!("{name}:[{inode}]"), None),
                FDTarget::Unknown(name, data) => ("other", format!("{name}:{data}"), None),
            };
            OpenFile {
                fd: fd.fd,
                kind,
                target,
                socket,
            }
        })
        .collect();
    out.sort_by_key(|f| f.fd);
    out
}

/// The sockets of the process's network namespace, by inode.
fn sockets(process: &Process) -> HashMap<u64, Socket> {
    let mut map = HashMap::new();
    for (protocol, entries) in [("tcp", process.tcp()), ("tcp6", process.tcp6())] {
        for e in entries.into_iter().flatten() {
            let listening = matches!(e.state, procfs::net::TcpState::Listen);
            map.insert(
                e.inode,
                Socket {
                    protocol,
                    local: e.local_address.to_string(),
                    remote: (!listening).then(|| e.remote_address.to_string()),
                    state: format!("{:?}", e.state),
                },
            );
        }
    }
    for (protocol, entries) in [("udp", process.udp()), ("udp6", process.udp6())] {
        for e in entries.into_iter().flatten() {
            let connected = e.remote_address.port() != 0;
            map.insert(
                e.inode,
                Socket {
                    protocol,
                    local: e.local_address.to_string(),
                    remote: connected.then(|| e.remote_address.to_string()),
                    state: format!("{:?}", e.state),
                },
            );
        }
    }
    for e in process.unix().into_iter().flatten() {
        map.insert(
            e.inode,
            Socket {
                protocol: "unix",
                local: e.path.map(|p| p.display().to_string()).unwrap_or_default(),
                remote: None,
                state: format!("{:?}", e.state),
            },
        );
    }
    map
}
