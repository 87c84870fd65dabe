//! The `--device` syntax.

use crate::container::mounts::{absolute, DeviceRequest, MountError};

/// `--device HOST[:CONTAINER][:ACCESS]`; HOST and CONTAINER absolute, ACCESS a subset of `rwm`
/// (default `rwm`). With two fields, the second is CONTAINER when absolute and ACCESS otherwise.
/// That HOST is a device node is checked when the container is assembled, as the user.
pub fn parse_device(s: &str) -> Result<DeviceRequest, MountError> {
    let fields: Vec<&str> = s.split(':').collect();
    let (host, container, access) = match fields.as_slice() {
        [host] => (*host, *host, "rwm"),
        [host, second] if second.starts_with('/') => (*host, *second, "rwm"),
        [host, access] => (*host, *host, *access),
        [host, container, access] => (*host, *container, *access),
        _ => return Err(MountError::parse(s, "expected HOST[:CONTAINER][:ACCESS]")),
    };
    let host = absolute(s, "host device", host)?;
    let container = absolute(s, "container path", container)?;
    check_access(access).map_err(|reason| MountError::parse(s, reason))?;
    Ok(DeviceRequest {
        host,
        container,
        access: access.to_string(),
    })
}

fn check_access(access: &str) -> Result<(), String> {
    if access.is_empty() {
        return Err("empty access flags (use a subset of 'rwm')".into());
    }
    for (i, c) in access.char_indices() {
        if !"rwm".contains(c) {
            return Err(format!("access flag '{c}' is not one of 'rwm'"));
        }
        if access[..i].contains(c) {
            return Err(format!("access flag '{c}' repeated"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SiteDevice;
    use std::path::{Path, PathBuf};

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn devices() {
        let d = parse_device("/dev/fuse").unwrap();
        assert_eq!(
            (d.container.as_path(), d.access.as_str()),
            (Path::new("/dev/fuse"), "rwm")
        );
        let d = parse_device("/dev/fuse:/dev/f").unwrap();
        assert_eq!(
            (d.container.as_path(), d.access.as_str()),
            (Path::new("/dev/f"), "rwm")
        );
        let d = parse_device("/dev/fuse:rw").unwrap();
        assert_eq!(
            (d.container.as_path(), d.access.as_str()),
            (Path::new("/dev/fuse"), "rw")
        );
        let d = parse_device("/dev/fuse:/dev/f:mr").unwrap();
        assert_eq!(
            (d.container.as_path(), d.access.as_str()),
            (Path::new("/dev/f"), "mr")
        );
        for (input, needle) in [
            ("dev/fuse", "absolute"),
            ("/dev/fuse:rwx", "'x'"),
            ("/dev/fuse:rr", "repeated"),
            ("/dev/fuse:f:rw", "absolute"),
            ("/dev/fuse:/f:", "empty access"),
            ("/a:/b:r:w", "HOST[:CONTAINER][:ACCESS]"),
            ("", "empty host device"),
        ] {
            let e = parse_device(input).unwrap_err().to_string();
            assert!(e.contains(needle), "{input}: {e}");
        }
        let site = SiteDevice {
            source: p("/dev/nvidia0"),
            destination: None,
            access: None,
        };
        assert_eq!(DeviceRequest::from_site(&site).access, "rwm");
    }
}
