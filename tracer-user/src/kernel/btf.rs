//! What the kernel programs need to know from the running kernel's BTF: that the tracepoints
//! exist, the arguments they pass, and where fields sit in `task_struct` & co. (aya-ebpf has no
//! CO-RE relocations, so the loader does their job and hands offsets over in `CONFIG`).

use std::path::{Path, PathBuf};

use btf_rs::{Btf, Type};

/// The default place of the kernel's BTF.
pub const DEFAULT_PATH: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file is missing: the kernel was built without CONFIG_DEBUG_INFO_BTF.
    #[error(
        "kernel BTF not found at {path}: scalp-bpf needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (or pass --kernel-btf FILE)"
    )]
    Missing { path: PathBuf },
    /// The file exists but is not BTF.
    #[error("cannot read kernel BTF {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: btf_rs::Error,
    },
    /// A type or field scalp-bpf relies on is not in this kernel.
    #[error("this kernel's BTF has no {what}; scalp-bpf cannot trace on it")]
    MissingType { what: String },
    /// No way a tracer's tables know fits this kernel.
    #[error("this kernel cannot run scalp-bpf: {why}")]
    Unsupported { why: String },
}

impl BtfError {
    /// Why a tracer cannot run, without the words for a whole run failing.
    pub fn reason(&self) -> String {
        match self {
            BtfError::MissingType { what } => format!("no {what} in this kernel"),
            BtfError::Unsupported { why } => why.clone(),
            other => other.to_string(),
        }
    }
}

/// The parsed kernel BTF.
pub struct KernelBtf {
    btf: Btf,
    path: PathBuf,
}

impl KernelBtf {
    pub fn open(path: &Path) -> Result<KernelBtf, BtfError> {
        if !path.is_file() {
            return Err(BtfError::Missing {
                path: path.to_owned(),
            });
        }
        let btf = Btf::from_file(path).map_err(|source| BtfError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
        Ok(KernelBtf {
            btf,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The byte offset of `field` in `struct name`, looking through anonymous structs and unions.
    pub fn field_offset(&self, name: &str, field: &str) -> Result<u32, BtfError> {
        self.field(name, field)
            .map(|(offset, _)| offset)
            .ok_or_else(|| BtfError::MissingType {
                what: format!("struct {name}.{field}"),
            })
    }

    /// The struct (with members: not a forward declaration) called `name`.
    fn strukt(&self, name: &str) -> Option<btf_rs::Struct> {
        self.btf
            .resolve_types_by_name(name)
            .ok()?
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
    }

    /// The byte offset and the type of `field` in `struct name`.
    fn field(&self, name: &str, field: &str) -> Option<(u32, Type)> {
        let strukt = self.strukt(name)?;
        self.find_member(&strukt, field, 0)
    }

    fn find_member(
        &self,
        strukt: &btf_rs::Struct,
        field: &str,
        base_bits: u32,
    ) -> Option<(u32, Type)> {
        for member in &strukt.members {
            let bits = base_bits + member.bit_offset();
            let name = self.btf.resolve_name(member).unwrap_or_default();
            if name == field {
                let ty = self.btf.resolve_chained_type(member).ok()?;
                return bits.is_multiple_of(8).then_some((bits / 8, ty));
            }
            if name.is_empty() {
                let Ok(inner) = self.btf.resolve_chained_type(member) else {
                    continue;
                };
                if let Type::Struct(s) | Type::Union(s) = self.skip_modifiers(inner)
                    && let Some(found) = self.find_member(&s, field, bits)
                {
                    return Some(found);
                }
            }
        }
        None
    }

    /// The C spelling of `field`'s type in `struct name` (`struct block_device *`), or None
    /// when the struct has no such field.
    pub fn field_type(&self, name: &str, field: &str) -> Option<String> {
        self.field(name, field).map(|(_, t)| self.spell(t))
    }

    /// Whether any type or function is called `name`.
    pub fn has_type(&self, name: &str) -> bool {
        self.btf
            .resolve_ids_by_name(name)
            .is_ok_and(|ids| !ids.is_empty())
    }

    /// `sizeof(struct name)`.
    pub fn struct_size(&self, name: &str) -> Result<u32, BtfError> {
        self.strukt(name)
            .map(|s| s.size() as u32)
            .ok_or_else(|| BtfError::MissingType {
                what: format!("struct {name}"),
            })
    }

    /// A type as C spells it, modifiers left out: `struct request *`, `blk_status_t`, `int`.
    fn spell(&self, t: Type) -> String {
        let mut stars = String::new();
        let mut t = self.skip_qualifiers(t);
        // Pointers to pointers are rare in tracepoints; a few levels are plenty.
        for _ in 0..4 {
            let Type::Ptr(p) = &t else { break };
            stars.push('*');
            match self.btf.resolve_chained_type(p) {
                Ok(next) => t = self.skip_qualifiers(next),
                Err(_) => return format!("void {stars}"),
            }
        }
        let name = |b: &dyn btf_rs::BtfType| self.btf.resolve_name(b).unwrap_or_default();
        let base = match &t {
            Type::Void => "void".to_owned(),
            Type::Struct(s) => format!("struct {}", name(s)),
            Type::Union(u) => format!("union {}", name(u)),
            Type::Enum(e) => format!("enum {}", name(e)),
            Type::Enum64(e) => format!("enum {}", name(e)),
            Type::Fwd(f) if f.is_union() => format!("union {}", name(f)),
            Type::Fwd(f) => format!("struct {}", name(f)),
            Type::Int(i) => name(i),
            Type::Typedef(td) => name(td),
            Type::Float(f) => name(f),
            Type::FuncProto(_) => "function".to_owned(),
            other => other.name().to_owned(),
        };
        if stars.is_empty() {
            base
        } else {
            format!("{base} {stars}")
        }
    }

    /// Skips const, volatile, restrict and type tags (keeps typedefs: their names say more).
    fn skip_qualifiers(&self, mut t: Type) -> Type {
        for _ in 0..8 {
            match &t {
                Type::Const(_) | Type::Volatile(_) | Type::Restrict(_) | Type::TypeTag(_) => {
                    match t
                        .as_btf_type()
                        .and_then(|b| self.btf.resolve_chained_type(b).ok())
                    {
                        Some(next) => t = next,
                        None => break,
                    }
                }
                _ => break,
            }
        }
        t
    }

    fn skip_modifiers(&self, mut t: Type) -> Type {
        for _ in 0..8 {
            match &t {
                Type::Typedef(_) | Type::Const(_) | Type::Volatile(_) | Type::TypeTag(_) => match t
                    .as_btf_type()
                    .and_then(|b| self.btf.resolve_chained_type(b).ok())
                {
                    Some(next) => t = next,
                    None => break,
                },
                _ => break,
            }
        }
        t
    }

    /// The value of `member` in `enum name`.
    pub fn enum_value(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        let missing = || BtfError::MissingType {
            what: format!("enum {name} value {member}"),
        };
        let types = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|_| missing())?;
        types
            .iter()
            .find_map(|t| match t {
                Type::Enum(e) => e
                    .members
                    .iter()
                    .find(|m| self.btf.resolve_name(*m).is_ok_and(|n| n == member))
                    .map(|m| m.val()),
                _ => None,
            })
            .ok_or_else(missing)
    }

    /// Whether the kernel knows BPF helper `name` (`enum bpf_func_id` lists the helpers a kernel
    /// has, e.g. `get_current_task_btf` for `BPF_FUNC_get_current_task_btf`).
    pub fn has_helper(&self, name: &str) -> bool {
        self.enum_value("bpf_func_id", &format!("BPF_FUNC_{name}"))
            .is_ok()
    }

    /// The byte offset reached by following `path` (`"file.f_path", "path.dentry"`, …): the sum
    /// of each `struct.field` offset.
    pub fn path_offset(&self, path: &[(&str, &str)]) -> Result<u32, BtfError> {
        path.iter()
            .try_fold(0, |acc, (s, f)| Ok(acc + self.field_offset(s, f)?))
    }

    /// The arguments a BTF tracepoint passes to programs (without the leading context pointer),
    /// as C spells their types, or None when the kernel has no such tracepoint.
    pub fn tracepoint_params(&self, tracepoint: &str) -> Option<Vec<String>> {
        let name = format!("btf_trace_{tracepoint}");
        let types = self.btf.resolve_types_by_name(&name).ok()?;
        let typedef = types.into_iter().find(|t| matches!(t, Type::Typedef(_)))?;
        let ptr = self.btf.resolve_chained_type(typedef.as_btf_type()?).ok()?;
        let proto = self.btf.resolve_chained_type(ptr.as_btf_type()?).ok()?;
        let Type::FuncProto(p) = proto else {
            return None;
        };
        Some(
            p.parameters
                .iter()
                .skip(1)
                .map(|param| {
                    self.btf
                        .resolve_chained_type(param)
                        .map_or_else(|_| "?".to_owned(), |t| self.spell(t))
                })
                .collect(),
        )
    }

    /// The number of arguments a BTF tracepoint passes to programs (without the leading context
    /// pointer), or None when the kernel has no such tracepoint.
    pub fn tracepoint_args(&self, tracepoint: &str) -> Option<usize> {
        self.tracepoint_params(tracepoint).map(|p| p.len())
    }

    /// Fails unless the kernel has this BTF tracepoint.
    pub fn require_tracepoint(&self, tracepoint: &str) -> Result<usize, BtfError> {
        self.tracepoint_args(tracepoint)
            .ok_or_else(|| BtfError::MissingType {
                what: format!("tracepoint {tracepoint}"),
            })
    }
}
