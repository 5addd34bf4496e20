//! Syscall numbers to names, for the architectures scalp-bpf runs on.

/// A supported architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// The architecture this binary runs on.
    pub fn host() -> Result<Arch, String> {
        match std::env::consts::ARCH {
            "x86_64" => Ok(Arch::X86_64),
            "aarch64" => Ok(Arch::Aarch64),
            other => Err(other.to_owned()),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The syscall's name, or `syscall_<nr>` for numbers this table does not know.
    pub fn syscall_name(self, nr: u32) -> String {
        let known = match self {
            Arch::X86_64 => syscalls::x86_64::Sysno::new(nr as usize).map(|s| s.name()),
            Arch::Aarch64 => syscalls::aarch64::Sysno::new(nr as usize).map(|s| s.name()),
        };
        match known {
            Some(name) => name.to_owned(),
            None => format!("syscall_{nr}"),
        }
    }

    pub fn exit_nr(self) -> u32 {
        match self {
            Arch::X86_64 => 60,
            Arch::Aarch64 => 93,
        }
    }

    pub fn exit_group_nr(self) -> u32 {
        match self {
            Arch::X86_64 => 231,
            Arch::Aarch64 => 94,
        }
    }

    /// rt_sigreturn, clone, clone3, fork, vfork (`NO_SYSCALL` where the architecture lacks one).
    pub fn special_nrs(self) -> [u32; 5] {
        use tracer_common::NO_SYSCALL;
        match self {
            Arch::X86_64 => [15, 56, 435, 57, 58],
            Arch::Aarch64 => [139, 220, 435, NO_SYSCALL, NO_SYSCALL],
        }
    }

    /// Where the first three syscall arguments are in `struct pt_regs` at syscall exit: (field,
    /// extra bytes). arm64 overwrites x0 with the return value and keeps the argument in orig_x0.
    pub fn regs_args(self) -> [(&'static str, u32); 3] {
        match self {
            Arch::X86_64 => [("di", 0), ("si", 0), ("dx", 0)],
            Arch::Aarch64 => [("orig_x0", 0), ("regs", 8), ("regs", 16)],
        }
    }

    /// The `struct pt_regs` field holding the syscall number.
    pub fn regs_syscall_nr_field(self) -> &'static str {
        match self {
            Arch::X86_64 => "orig_ax",
            Arch::Aarch64 => "syscallno",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_tables_resolve_known_numbers() {
        assert_eq!(Arch::X86_64.syscall_name(110), "getppid");
        assert_eq!(Arch::X86_64.syscall_name(257), "openat");
        assert_eq!(Arch::Aarch64.syscall_name(173), "getppid");
        assert_eq!(Arch::Aarch64.syscall_name(56), "openat");
        assert_eq!(
            Arch::X86_64.syscall_name(Arch::X86_64.exit_group_nr()),
            "exit_group"
        );
        assert_eq!(
            Arch::Aarch64.syscall_name(Arch::Aarch64.exit_group_nr()),
            "exit_group"
        );
        for arch in [Arch::X86_64, Arch::Aarch64] {
            let names: Vec<String> = arch
                .special_nrs()
                .iter()
                .filter(|&&nr| nr != tracer_common::NO_SYSCALL)
                .map(|&nr| arch.syscall_name(nr))
                .collect();
            let expected: &[&str] = match arch {
                Arch::X86_64 => &["rt_sigreturn", "clone", "clone3", "fork", "vfork"],
                Arch::Aarch64 => &["rt_sigreturn", "clone", "clone3"],
            };
            assert_eq!(names, expected);
        }
    }

    #[test]
    fn unknown_numbers_keep_their_number() {
        assert_eq!(Arch::X86_64.syscall_name(9999), "syscall_9999");
    }
}
