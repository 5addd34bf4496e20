//! Block device numbers to names, as /sys/dev/block tells.

use std::collections::HashMap;

/// Major and minor of a kernel-encoded `dev_t` (major << 20 | minor).
pub fn kernel_dev(dev: u32) -> (u32, u32) {
    (dev >> 20, dev & 0xf_ffff)
}

/// Names of block devices, looked up once each.
#[derive(Default)]
pub struct DeviceNames {
    cache: HashMap<u32, String>,
}

impl DeviceNames {
    /// `vda`, `nvme0n1p2`, … or `MAJ:MIN` when sysfs does not know it.
    pub fn name(&mut self, dev: u32) -> &str {
        self.cache.entry(dev).or_insert_with(|| {
            let (major, minor) = kernel_dev(dev);
            std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent"))
                .ok()
                .and_then(|u| {
                    u.lines()
                        .find_map(|l| l.strip_prefix("DEVNAME="))
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| format!("{major}:{minor}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_kernel_dev_t() {
        assert_eq!(kernel_dev((254 << 20) | 3), (254, 3));
        assert_eq!(kernel_dev((8 << 20) | 0x12345), (8, 0x12345));
    }

    #[test]
    fn unknown_devices_keep_their_numbers() {
        assert_eq!(DeviceNames::default().name((4095 << 20) | 77), "4095:77");
    }
}
