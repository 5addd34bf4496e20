//! Reading a process's memory (`process_vm_readv`) and the CPython objects in it that name a
//! frame: str (compact ASCII or compact 1/2/4-byte kinds) and bytes.

use super::offsets::Offsets;

/// Longest string read (a file path or a qualified name).
const MAX_STR: usize = 4096;
/// Longest line table read.
const MAX_BYTES: usize = 1 << 20;

/// `len` bytes at `addr` of process `pid`; `None` if any of them cannot be read.
pub fn read(pid: u32, addr: u64, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: `local` describes `buf`, which lives across the call; the remote side is only
    // read by the kernel, which checks it.
    let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    (n == len as isize).then_some(buf)
}

pub fn u64_at(pid: u32, addr: u64) -> Option<u64> {
    Some(u64::from_ne_bytes(read(pid, addr, 8)?.try_into().ok()?))
}

pub fn i32_at(pid: u32, addr: u64) -> Option<i32> {
    Some(i32::from_ne_bytes(read(pid, addr, 4)?.try_into().ok()?))
}

/// A `str` object's text.
pub fn string(pid: u32, o: &Offsets, addr: u64) -> Option<String> {
    let len = u64_at(pid, addr + u64::from(o.ascii_length))? as usize;
    if len > MAX_STR {
        return None;
    }
    let state = u64_at(pid, addr + u64::from(o.ascii_state))? as u32;
    // PyASCIIObject.state: interned:2, kind:3, compact:1, ascii:1, ready:1.
    let kind = ((state >> 2) & 7) as usize;
    let compact = state & (1 << 5) != 0;
    let ascii = state & (1 << 6) != 0;
    if !compact || !(1..=4).contains(&kind) || kind == 3 {
        return None;
    }
    if ascii {
        let b = read(pid, addr + u64::from(o.ascii_size), len)?;
        return String::from_utf8(b).ok();
    }
    let b = read(pid, addr + u64::from(o.compact_size), len * kind)?;
    Some(match kind {
        1 => b.iter().map(|&c| char::from(c)).collect(),
        2 => String::from_utf16_lossy(
            &b.chunks_exact(2)
                .map(|c| u16::from_ne_bytes([c[0], c[1]]))
                .collect::<Vec<_>>(),
        ),
        _ => b
            .chunks_exact(4)
            .filter_map(|c| char::from_u32(u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
    })
}

/// A `bytes` object's content.
pub fn bytes(pid: u32, o: &Offsets, addr: u64) -> Option<Vec<u8>> {
    let len = u64_at(pid, addr + u64::from(o.var_size))? as usize;
    if len > MAX_BYTES {
        return None;
    }
    read(pid, addr + u64::from(o.bytes_sval), len)
}
