//! The other CPythons of the SQL call-site tests (tests/test_python_sites.py): Debian's 3.9
//! (bullseye) and 3.13 (trixie), each with its headers (for tests/python/offsets.c) and the
//! tests' database drivers, under `target/pythons/<version>/` — fetched once, then reused.
//!
//! The packages come from Debian's archive through the private apt configuration of the kernel
//! matrix (`vm::kernels::apt_base`: the host's apt state is neither read nor written), pinned by
//! SHA-256, and are unpacked with `dpkg-deb -x`. Python finds its standard library next to its
//! binary, so an unpacked tree runs where it lies. The binary gets a run path (DT_RPATH, which
//! also serves the libraries its extension modules load) to the tree's own libraries: bullseye's
//! libssl1.1 and libffi7, which bookworm lacks; trixie's 3.13 needs glibc 2.38, so its tree also
//! holds trixie's libc and the binary's ELF interpreter is that libc's loader (`patchelf`):
//! `/proc/PID/exe` is still the python binary itself, which is what scalp-bpf looks at.
//! PyMySQL, psycopg (pure Python; the host's libpq5) and eventlet are installed for each version
//! with the venv's pip (`--target`, `--python-version`, wheels only).

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{
    root,
    setup::sh,
    vm::kernels::{apt_base, check_pin, private_apt, sha256},
};

/// One pinned Debian package.
struct Deb {
    package: &'static str,
    version: &'static str,
    sha256: &'static str,
}

/// One interpreter: where its packages come from and what it needs besides the host's.
struct Interpreter {
    version: &'static str,
    suite: &'static str,
    debs: &'static [Deb],
    /// Its libc is the suite's (newer than the host's): the binary is pointed at its loader.
    own_libc: bool,
}

/// To move a pin: `apt-cache show PACKAGE` with the private configuration (see
/// `vm::kernels::apt_base`, sources in `target/pythons/apt/sources.list`) gives the version and
/// SHA256 the archive has now.
const INTERPRETERS: &[Interpreter] = &[
    Interpreter {
        version: "3.9",
        suite: "bullseye",
        own_libc: false,
        debs: &[
            Deb {
                package: "python3.9-minimal",
                version: "3.9.2-1",
                sha256: "5d6003c5c20223a2547ac4976e09a9ec778dbe351507a6292bef3b60df5f4aa7",
            },
            Deb {
                package: "libpython3.9-minimal",
                version: "3.9.2-1",
                sha256: "594283526d67e03e3c4e96534f6bfe5da1bf41da5d49360553c9b79fbf08c4ab",
            },
            Deb {
                package: "libpython3.9-stdlib",
                version: "3.9.2-1",
                sha256: "32ac64d959ac2dbc5bb289532fc9834dab8f671b5455695a3a9315aad973c65b",
            },
            // The headers (include/python3.9, internal/ too).
            Deb {
                package: "libpython3.9-dev",
                version: "3.9.2-1",
                sha256: "3a2172f6d926cf2e98a1a2e24f5aecdc3bcd56fa7c6d9f7a3fc4892f67377d5f",
            },
            // ssl/hashlib and ctypes of bullseye's build.
            Deb {
                package: "libssl1.1",
                version: "1.1.1w-0+deb11u1",
                sha256: "aadf8b4b197335645b230c2839b4517aa444fd2e8f434e5438c48a18857988f7",
            },
            Deb {
                package: "libffi7",
                version: "3.3-6",
                sha256: "30ca89bfddae5fa6e0a2a044f22b6e50cd17c4bc6bc850c579819aeab7101f0f",
            },
        ],
    },
    Interpreter {
        version: "3.13",
        suite: "trixie",
        own_libc: true,
        debs: &[
            Deb {
                package: "python3.13-minimal",
                version: "3.13.5-2+deb13u5",
                sha256: "c1fda9e7b1bf15b2fa75a238d8a8710e142fe14c722fc650c5fc614f078c9073",
            },
            Deb {
                package: "libpython3.13-minimal",
                version: "3.13.5-2+deb13u5",
                sha256: "a4aa6a9a8c77f87bfe545e1d14ec42c001d189ace90e3aa75deec882b39dee49",
            },
            Deb {
                package: "libpython3.13-stdlib",
                version: "3.13.5-2+deb13u5",
                sha256: "db161322a3481d2c0c3b9a3b9a03c3ab0e2b1718f54b88755fb4a3f939165b84",
            },
            Deb {
                package: "libpython3.13-dev",
                version: "3.13.5-2+deb13u5",
                sha256: "4bd7b17ffbeb367ce1fef8b6ff02536a25f29fc07372d1bdd3ed1e1faa5b9409",
            },
            // The binary needs GLIBC_2.38 (bookworm has 2.36).
            Deb {
                package: "libc6",
                version: "2.41-12+deb13u5",
                sha256: "b59b0625cd1a791375d40dab23a4d5d3d0641e3d0a773501becdc3725b7f99cf",
            },
            // Newer than bookworm's: expat (built in), mpdecimal (_decimal), OpenSSL 3.3+
            // (_ssl, which psycopg's ctypes wrapper imports) and the zstd it links.
            Deb {
                package: "libexpat1",
                version: "2.9.0-1~deb13u1",
                sha256: "feff874772cae904ae4d24e917b35664952bec4b4ae9100a4edda5a7fa746832",
            },
            Deb {
                package: "libmpdec4",
                version: "4.0.1-5",
                sha256: "4b431fb6617a664540dd65331f3fea703f756d8631cd613602f0bb8f0cc51bd2",
            },
            Deb {
                package: "libssl3t64",
                version: "3.5.9-1~deb13u1",
                sha256: "ffefb9af363e0e4592251b2533eb06453c8e470f7772e40263c4b2129251a6d5",
            },
            Deb {
                package: "libzstd1",
                version: "1.5.7+dfsg-1",
                sha256: "2f6a2aeacfc925eba8b00ac9139bc4bfccf8cacb09eb93de067074b26948eef9",
            },
        ],
    },
];

/// The drivers installed for every interpreter, and eventlet (pip runs with `--no-deps`: the
/// dependencies are listed — psycopg's `typing_extensions`, eventlet's greenlet, a C extension
/// with a wheel per version, and dnspython): versions that support 3.9 through 3.13.
const DRIVERS: &[&str] = &[
    "PyMySQL==1.1.1",
    "psycopg==3.2.10",
    "typing_extensions==4.12.2",
    "eventlet==0.40.4",
    "greenlet==3.2.4",
    "dnspython==2.7.0",
];

/// `target/pythons`.
pub fn dir() -> PathBuf {
    root().join("target/pythons")
}

/// Installs every interpreter not installed yet (or installed from other pins).
pub fn install() -> Result<()> {
    crate::setup::apt(&["patchelf"])?;
    let mut updated = false;
    for interp in INTERPRETERS {
        let tree = dir().join(interp.version);
        let stamp = tree.join(".installed");
        let wanted = fingerprint(interp);
        if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
            continue;
        }
        let started = std::time::Instant::now();
        eprintln!(
            "setup: CPython {} from Debian {} into {}",
            interp.version,
            interp.suite,
            tree.display()
        );
        let debs = fetch(interp, &mut updated)?;
        if tree.exists() {
            std::fs::remove_dir_all(&tree)?;
        }
        for deb in &debs {
            sh(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tree))?;
        }
        let libs = tree.join("usr/lib/x86_64-linux-gnu");
        let binary = tree.join(format!("usr/bin/python{}", interp.version));
        let mut patch = Command::new("patchelf");
        if interp.own_libc {
            patch
                .arg("--set-interpreter")
                .arg(libs.join("ld-linux-x86-64.so.2"));
        }
        sh(patch
            .arg("--force-rpath")
            .arg("--set-rpath")
            .arg(&libs)
            .arg(&binary))?;
        sh(Command::new(crate::setup::venv().join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check", "--no-deps"])
            .args(["--only-binary=:all:", "--implementation", "cp"])
            .args(["--python-version", interp.version, "--target"])
            .arg(tree.join("site"))
            .args(DRIVERS))?;
        let check = Command::new(&binary)
            .args(["-c", "import pymysql, psycopg, ssl, eventlet"])
            .env("PYTHONPATH", tree.join("site"))
            .output()
            .context("running the unpacked interpreter")?;
        if !check.status.success() {
            bail!(
                "{} cannot import its drivers: {}",
                binary.display(),
                String::from_utf8_lossy(&check.stderr)
            );
        }
        std::fs::write(&stamp, wanted)?;
        eprintln!(
            "setup: CPython {} ready in {:.1} s",
            interp.version,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// What an installed tree was made from.
fn fingerprint(interp: &Interpreter) -> String {
    let mut s: String = interp
        .debs
        .iter()
        .map(|d| format!("{} {} {}\n", d.package, d.version, d.sha256))
        .collect();
    s.extend(DRIVERS.iter().map(|d| format!("{d}\n")));
    s
}

/// The interpreter's packages, downloaded into `target/pythons/debs` unless there already with
/// the pinned digest.
fn fetch(interp: &Interpreter, updated: &mut bool) -> Result<Vec<PathBuf>> {
    let debs = dir().join("debs");
    std::fs::create_dir_all(&debs)?;
    let path = |d: &Deb| {
        debs.join(format!(
            "{}_{}_amd64.deb",
            d.package,
            d.version.replace(':', "%3a")
        ))
    };
    let missing: Vec<&Deb> = interp
        .debs
        .iter()
        .filter(|d| sha256(&path(d)).ok().as_deref() != Some(d.sha256))
        .collect();
    if !missing.is_empty() {
        let apt = dir().join("apt");
        let suites: Vec<&str> = INTERPRETERS.iter().map(|i| i.suite).collect();
        private_apt(&apt, &suites)?;
        if !*updated {
            sh(apt_base("apt-get", &apt).arg("update"))?;
            *updated = true;
        }
        let specs: Vec<String> = missing
            .iter()
            .map(|d| format!("{}={}", d.package, d.version))
            .collect();
        let status = apt_base("apt-get", &apt)
            .current_dir(&debs)
            .arg("download")
            .args(&specs)
            .status()
            .context("apt-get download")?;
        if !status.success() {
            bail!(
                "cannot download {} from Debian {} (replaced in the archive?): update the pins \
                 in xtask/src/pythons.rs",
                specs.join(" "),
                interp.suite
            );
        }
    }
    interp
        .debs
        .iter()
        .map(|d| {
            let p = path(d);
            check_pin(&p, d.sha256)?;
            Ok(p)
        })
        .collect()
}
