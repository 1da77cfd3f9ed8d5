//! Users and privilege dropping for workloads launched by `zt-agent run`.

use std::ffi::CString;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("unknown user {0:?}")]
    Unknown(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
    pub name: Option<String>,
    pub home: Option<String>,
}

/// Look a user up by name or numeric uid.
pub fn lookup(user: &str) -> Result<Account, UserError> {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: zeroed passwd is a valid out-parameter.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc = if let Ok(uid) = user.parse::<u32>() {
        // SAFETY: valid out-parameters and buffer.
        unsafe {
            libc::getpwuid_r(
                uid,
                &mut pw,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        }
    } else {
        let name = CString::new(user).map_err(|_| UserError::Unknown(user.into()))?;
        // SAFETY: valid NUL-terminated name, out-parameters and buffer.
        unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                &mut pw,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        }
    };
    if rc != 0 || result.is_null() {
        // A numeric uid without a passwd entry is still a valid target.
        return match user.parse::<u32>() {
            Ok(uid) => Ok(Account {
                uid,
                gid: uid,
                name: None,
                home: None,
            }),
            Err(_) => Err(UserError::Unknown(user.into())),
        };
    }
    let text = |p: *const libc::c_char| {
        // SAFETY: getpw*_r filled these as NUL-terminated strings inside `buf`.
        (!p.is_null()).then(|| {
            unsafe { std::ffi::CStr::from_ptr(p) }
                .to_string_lossy()
                .into_owned()
        })
    };
    Ok(Account {
        uid: pw.pw_uid,
        gid: pw.pw_gid,
        name: text(pw.pw_name),
        home: text(pw.pw_dir),
    })
}

/// Drop to `acct` with no capabilities, no supplementary groups beyond its own gid,
/// and no_new_privs. Runs in the forked child right before exec, so it only makes
/// raw system calls.
pub fn drop_privileges(acct: &Account) -> std::io::Result<()> {
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // SAFETY: plain system calls with scalar arguments.
    unsafe {
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        // Empty the bounding set while we still hold CAP_SETPCAP.
        for cap in 0..=63 {
            if libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) == 1 {
                check(libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0))?;
            }
        }
        check(libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        ))?;
        let groups = [acct.gid];
        check(libc::setgroups(1, groups.as_ptr()))?;
        check(libc::setresgid(acct.gid, acct.gid, acct.gid))?;
        check(libc::setresuid(acct.uid, acct.uid, acct.uid))?;
        // For uid 0 (only with an explicit `--user root`), setresuid keeps the
        // capabilities: clear them explicitly.
        let mut hdr = CapHeader {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let data = [CapData::default(); 2];
        check(libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) as libc::c_int)?;
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_root_and_nobody() {
        let root = lookup("root").expect("root");
        assert_eq!(
            (root.uid, root.gid, root.name.as_deref()),
            (0, 0, Some("root"))
        );
        assert_eq!(lookup("0").expect("0").uid, 0);
        assert!(lookup("no-such-user-zt").is_err());
    }
}
