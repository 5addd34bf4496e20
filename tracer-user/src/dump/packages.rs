//! The Python packages a process can import: its `sys.path` site directories, worked out from
//! outside (the venv its interpreter runs in, the interpreter's prefix, `PYTHONPATH`, the user
//! site, `.pth` path entries, and any site directory its memory maps or stacks show), then every
//! `*.dist-info` and `*.egg-info` in them. The first of a name on the path wins, as in
//! `importlib.metadata`.

use std::{
    collections::HashSet,
    fs,
    path::{Path, PathBuf},
};

use serde::Serialize;

/// One installed distribution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// The site directory it is installed in.
    pub location: PathBuf,
}

/// What is known of the process's interpreter.
#[derive(Debug, Default)]
pub struct Interpreter<'a> {
    /// `X.Y`, when known.
    pub version: Option<(u32, u32)>,
    pub argv: &'a [String],
    /// `/proc/PID/exe`.
    pub exe: Option<PathBuf>,
    pub cwd: Option<PathBuf>,
    /// `PATH`, `PYTHONPATH`, `HOME`, `PYTHONNOUSERSITE` from its environment.
    pub env: Vec<(String, String)>,
    /// Paths seen in its memory maps and stack frames.
    pub seen: Vec<PathBuf>,
}

impl Interpreter<'_> {
    fn env(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// argv\[0\] as a path: as given, against the cwd, or found on `PATH`.
    fn argv0(&self) -> Option<PathBuf> {
        let arg0 = self.argv.first()?;
        if arg0.contains('/') {
            return Some(match &self.cwd {
                Some(cwd) => cwd.join(arg0),
                None => PathBuf::from(arg0),
            });
        }
        self.env("PATH")?
            .split(':')
            .map(|dir| Path::new(dir).join(arg0))
            .find(|p| p.exists())
    }

    /// The `X.Y` of the interpreter: as told, else from its executable's name (`python3.11`).
    fn version_dir(&self) -> Option<String> {
        if let Some((major, minor)) = self.version {
            return Some(format!("python{major}.{minor}"));
        }
        let name = self.exe.as_ref()?.file_name()?.to_str()?.to_owned();
        let rest = name.strip_prefix("python")?;
        let (major, minor) = rest.split_once('.')?;
        (major.parse::<u32>().is_ok() && minor.parse::<u32>().is_ok()).then_some(name)
    }
}

/// The site directories, in `sys.path` order, that exist.
pub fn site_dirs(interp: &Interpreter) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(pythonpath) = interp.env("PYTHONPATH") {
        dirs.extend(
            pythonpath
                .split(':')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
        );
    }
    let pyver = interp.version_dir();
    let venv = interp
        .argv0()
        .and_then(|p| Some(p.parent()?.parent()?.to_owned()))
        .filter(|root| root.join("pyvenv.cfg").is_file());
    let mut system_site = true;
    if let (Some(venv), Some(pyver)) = (&venv, &pyver) {
        dirs.push(venv.join("lib").join(pyver).join("site-packages"));
        let cfg = fs::read_to_string(venv.join("pyvenv.cfg")).unwrap_or_default();
        system_site = cfg.lines().any(|l| {
            l.split_once('=').is_some_and(|(k, v)| {
                k.trim() == "include-system-site-packages" && v.trim().eq_ignore_ascii_case("true")
            })
        });
    }
    if let (Some(pyver), true) = (&pyver, system_site) {
        // The user site comes before the prefix's (not in a venv, not with -s or
        // PYTHONNOUSERSITE).
        let no_user = venv.is_some()
            || interp
                .env("PYTHONNOUSERSITE")
                .is_some_and(|v| !v.is_empty())
            || interp
                .argv
                .iter()
                .skip(1)
                .take_while(|a| a.starts_with('-'))
                .any(|a| a.len() > 1 && !a.starts_with("--") && a[1..].contains(['s', 'I']));
        if let (Some(home), false) = (interp.env("HOME"), no_user) {
            dirs.push(
                Path::new(home)
                    .join(".local/lib")
                    .join(pyver)
                    .join("site-packages"),
            );
        }
        if let Some(prefix) = interp
            .exe
            .as_ref()
            .and_then(|exe| Some(exe.parent()?.parent()?.to_owned()))
        {
            dirs.push(prefix.join("lib").join(pyver).join("site-packages"));
            if prefix == Path::new("/usr") {
                // Debian's site.py: local installs, then the distribution's packages.
                dirs.push(
                    Path::new("/usr/local/lib")
                        .join(pyver)
                        .join("dist-packages"),
                );
                dirs.push(PathBuf::from("/usr/lib/python3/dist-packages"));
                dirs.push(Path::new("/usr/lib").join(pyver).join("dist-packages"));
            }
        }
    }
    // .pth path entries extend the path right after their site directory.
    let mut with_pth = Vec::new();
    for dir in dirs {
        let extra = pth_entries(&dir);
        with_pth.push(dir);
        with_pth.extend(extra);
    }
    // Whatever else the process has loaded from a site directory.
    for path in &interp.seen {
        if let Some(site) = site_dir_of(path) {
            with_pth.push(site);
        }
    }
    let mut seen = HashSet::new();
    with_pth
        .into_iter()
        .filter(|d| d.is_dir() && seen.insert(d.clone()))
        .collect()
}

/// The `site-packages`/`dist-packages` directory a path lies in.
fn site_dir_of(path: &Path) -> Option<PathBuf> {
    let mut dir = PathBuf::new();
    for part in path.components() {
        dir.push(part);
        if matches!(
            part.as_os_str().to_str(),
            Some("site-packages" | "dist-packages")
        ) {
            return Some(dir);
        }
    }
    None
}

/// The directories `*.pth` files in `dir` add (lines that are paths, not `import` lines).
fn pth_entries(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut pth: Vec<PathBuf> = entries
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pth"))
        .collect();
    pth.sort();
    pth.iter()
        .filter_map(|p| fs::read_to_string(p).ok())
        .flat_map(|text| {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("import"))
                .map(|l| dir.join(l))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every distribution in `dirs`, the first of each (normalized) name only, sorted by name.
pub fn installed(dirs: &[PathBuf]) -> Vec<Package> {
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        let mut metas: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        metas.sort();
        for meta in metas {
            let file = match meta.extension().and_then(|e| e.to_str()) {
                Some("dist-info") => meta.join("METADATA"),
                Some("egg-info") if meta.is_dir() => meta.join("PKG-INFO"),
                Some("egg-info") => meta.clone(),
                _ => continue,
            };
            let Some((name, version)) = fs::read_to_string(&file).ok().and_then(|t| metadata(&t))
            else {
                continue;
            };
            if names.insert(normalize(&name)) {
                out.push(Package {
                    name,
                    version,
                    location: dir.clone(),
                });
            }
        }
    }
    out.sort_by_key(|p| normalize(&p.name));
    out
}

/// `Name` and `Version` from a core-metadata header block.
fn metadata(text: &str) -> Option<(String, String)> {
    let mut name = None;
    let mut version = None;
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("Name:") {
            name.get_or_insert_with(|| v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("Version:") {
            version.get_or_insert_with(|| v.trim().to_owned());
        }
    }
    Some((name?, version?))
}

/// PEP 503 name normalization: lower case, runs of `-_.` as one `-`.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_as_pip_does() {
        assert_eq!(normalize("PyMySQL"), "pymysql");
        assert_eq!(normalize("oslo.config"), "oslo-config");
        assert_eq!(normalize("zope__interface"), "zope-interface");
    }

    #[test]
    fn metadata_headers_stop_at_the_body() {
        let text = "Metadata-Version: 2.1\nName: oslo.db\nVersion: 15.0.0\n\nName: not this\n";
        assert_eq!(
            metadata(text),
            Some(("oslo.db".to_owned(), "15.0.0".to_owned()))
        );
        assert_eq!(metadata("Name: x\n"), None);
    }

    #[test]
    fn site_dirs_are_found_inside_paths() {
        assert_eq!(
            site_dir_of(Path::new("/v/lib/python3.11/site-packages/_cffi.so")),
            Some(PathBuf::from("/v/lib/python3.11/site-packages"))
        );
        assert_eq!(site_dir_of(Path::new("/usr/lib/libc.so.6")), None);
    }

    #[test]
    fn a_venv_and_its_packages_first_wins() {
        let root = std::env::temp_dir().join(format!("scalp-pkgs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let site = root.join("venv/lib/python3.11/site-packages");
        fs::create_dir_all(site.join("PyMySQL-1.1.0.dist-info")).unwrap();
        fs::write(
            site.join("PyMySQL-1.1.0.dist-info/METADATA"),
            "Name: PyMySQL\nVersion: 1.1.0\n",
        )
        .unwrap();
        fs::create_dir_all(root.join("venv/bin")).unwrap();
        fs::write(
            root.join("venv/pyvenv.cfg"),
            "include-system-site-packages = false\n",
        )
        .unwrap();
        let extra = root.join("extra/site-packages");
        fs::create_dir_all(extra.join("pymysql-0.9.dist-info")).unwrap();
        fs::write(
            extra.join("pymysql-0.9.dist-info/METADATA"),
            "Name: pymysql\nVersion: 0.9\n",
        )
        .unwrap();
        let argv = vec![root.join("venv/bin/python").display().to_string()];
        let interp = Interpreter {
            version: Some((3, 11)),
            argv: &argv,
            seen: vec![extra.join("x.so")],
            ..Interpreter::default()
        };
        let dirs = site_dirs(&interp);
        assert_eq!(dirs, [site.clone(), extra.clone()]);
        assert_eq!(
            installed(&dirs),
            [Package {
                name: "PyMySQL".to_owned(),
                version: "1.1.0".to_owned(),
                location: site,
            }]
        );
        fs::remove_dir_all(&root).unwrap();
    }
}
