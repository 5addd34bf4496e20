//! The configuration files a service was started with (named on its command line), with the
//! secrets in them masked: values of keys that name a password, secret, token or key, and the
//! password in any `scheme://user:password@host` URL (`connection`, `transport_url`).

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde::Serialize;

/// What a masked secret is shown as.
pub const MASK: &str = "***";
/// Config files larger than this are named but not shown.
const MAX_BYTES: u64 = 1 << 20;

/// One configuration file, its text masked, or why it could not be read.
#[derive(Debug, Serialize)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub text: Option<String>,
    pub error: Option<String>,
}

/// The files `argv` names as configuration: oslo.config's `--config-file F` and every `*.conf`
/// of `--config-dir D` (in its order: the files, then each directory sorted), and uWSGI's
/// `--ini F`; relative paths are the process's (`cwd`).
pub fn named_files(argv: &[String], cwd: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_owned())),
            None => (arg.as_str(), None),
        };
        let target = match flag {
            "--config-file" | "--ini" => &mut files,
            "--config-dir" => &mut dirs,
            _ => continue,
        };
        if let Some(value) = inline.or_else(|| args.next().cloned()) {
            target.push(cwd.join(value));
        }
    }
    for dir in dirs {
        let Ok(entries) = fs::read_dir(&dir) else {
            files.push(dir);
            continue;
        };
        let mut conf: Vec<PathBuf> = entries
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "conf"))
            .collect();
        conf.sort();
        files.extend(conf);
    }
    files.dedup();
    files
}

/// Reads and masks one file.
pub fn read(path: &Path) -> ConfigFile {
    let text = fs::metadata(path).and_then(|m| {
        if m.len() > MAX_BYTES {
            Err(std::io::Error::other(format!(
                "{} bytes: larger than the 1 MiB shown",
                m.len()
            )))
        } else {
            fs::read(path)
        }
    });
    match text {
        Ok(bytes) => ConfigFile {
            path: path.to_owned(),
            text: Some(mask(&String::from_utf8_lossy(&bytes))),
            error: None,
        },
        Err(e) => ConfigFile {
            path: path.to_owned(),
            text: None,
            error: Some(e.to_string()),
        },
    }
}

/// Masks the secrets of an INI text line by line; everything else is kept as written.
pub fn mask(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        out.push_str(&mask_line(line));
    }
    out
}

fn mask_line(line: &str) -> String {
    let trimmed = line.trim_start();
    if trimmed.starts_with('#') || trimmed.starts_with(';') || trimmed.starts_with('[') {
        return line.to_owned();
    }
    let Some(eq) = line.find(['=', ':']) else {
        return line.to_owned();
    };
    let (key, rest) = line.split_at(eq + 1);
    if secret_key(key[..key.len() - 1].trim()) {
        let value = rest.trim();
        if value.is_empty() {
            return line.to_owned();
        }
        let end = &rest[rest.trim_end().len()..];
        let lead = &rest[..rest.len() - rest.trim_start().len()];
        return format!("{key}{lead}{MASK}{end}");
    }
    format!("{key}{}", mask_url_passwords(rest))
}

/// Whether a key's value is a secret by its name.
fn secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "passwd", "secret", "token", "credential"]
        .iter()
        .any(|w| k.contains(w))
        || ((k == "key" || k.ends_with("_key")) && !k.ends_with("_file"))
}

/// `scheme://user:password@host` → `scheme://user:***@host`, for every URL in `s` and every
/// host of one (a transport_url names several: `rabbit://u:p@h1,u:p@h2/`).
pub fn mask_url_passwords(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(tail.len());
        let hosts: Vec<String> = tail[..end].split(',').map(mask_userinfo).collect();
        out.push_str(&hosts.join(","));
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// `user:password@host` → `user:***@host` (the userinfo ends at the last '@': a password may
/// contain '@' or ':').
fn mask_userinfo(host: &str) -> String {
    match host.rfind('@') {
        Some(at) => match host[..at].split_once(':') {
            Some((user, _)) => format!("{user}:{MASK}{}", &host[at..]),
            None => host.to_owned(),
        },
        None => host.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_and_the_rest_kept() {
        let text = "[DEFAULT]\n\
            debug = True\n\
            transport_url = rabbit://openstack:rabbitpw@127.0.0.1:5672/\n\
            # password = commented stays\n\
            [database]\n\
            connection = mysql+pymysql://nova:s3cr@t@127.0.0.1/nova?charset=utf8\n\
            [keystone_authtoken]\n\
            password=hunter2\n\
            memcache_secret_key = abc\n\
            admin_token: tok\n\
            certfile_key_file = /etc/x.pem\n\
            auth_url = http://127.0.0.1:5000/v3\n";
        let masked = mask(text);
        for secret in ["rabbitpw", "s3cr@t", "hunter2", "= abc", "tok\n"] {
            assert!(!masked.contains(secret), "{secret} left in {masked}");
        }
        assert!(masked.contains("rabbit://openstack:***@127.0.0.1:5672/"));
        assert!(masked.contains("mysql+pymysql://nova:***@127.0.0.1/nova?charset=utf8"));
        assert!(masked.contains("password=***\n"));
        assert!(masked.contains("memcache_secret_key = ***\n"));
        assert!(masked.contains("admin_token: ***\n"));
        assert!(masked.contains("# password = commented stays"));
        assert!(masked.contains("certfile_key_file = /etc/x.pem"));
        assert!(masked.contains("auth_url = http://127.0.0.1:5000/v3"));
        assert!(masked.contains("debug = True"));
    }

    #[test]
    fn every_host_of_a_transport_url_is_masked() {
        assert_eq!(
            mask_url_passwords(" rabbit://a:p1@h1:5672,b:p2@h2:5672/vhost"),
            " rabbit://a:***@h1:5672,b:***@h2:5672/vhost"
        );
        assert_eq!(
            mask_url_passwords("http://host/path and http://u@h/"),
            "http://host/path and http://u@h/"
        );
    }

    #[test]
    fn files_come_from_oslo_and_uwsgi_flags() {
        let argv: Vec<String> = [
            "/usr/bin/python3",
            "/usr/bin/nova-api",
            "--config-file",
            "/etc/nova/nova.conf",
            "--config-file=rel.conf",
            "--ini",
            "/etc/uwsgi.ini",
            "--debug",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            named_files(&argv, Path::new("/srv")),
            [
                PathBuf::from("/etc/nova/nova.conf"),
                PathBuf::from("/srv/rel.conf"),
                PathBuf::from("/etc/uwsgi.ini"),
            ]
        );
    }
}
