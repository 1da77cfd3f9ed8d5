//! Struct member offsets from the running kernel's BTF (/sys/kernel/btf/vmlinux).
//!
//! Rust eBPF has no CO-RE field relocation, so the programs read kernel structs only
//! at offsets computed here at start-up. aya-obj parses BTF but keeps struct members
//! private, so this reads just what it needs: the type section and the string table.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read kernel BTF at {path}: {source} (the kernel needs CONFIG_DEBUG_INFO_BTF)")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel BTF is malformed: {0}")]
    Malformed(&'static str),
    #[error("kernel BTF has no member {member} in struct {strukt}")]
    NoMember { strukt: String, member: String },
}

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(BtfError::Malformed("truncated"))
}

fn str_at(strings: &[u8], off: u32) -> &[u8] {
    let s = strings.get(off as usize..).unwrap_or_default();
    let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
    &s[..end]
}

/// Byte offset of `strukt.member` (a direct, byte-aligned member).
/// The type and string sections of a BTF blob.
fn sections(data: &[u8]) -> Result<(&[u8], &[u8]), BtfError> {
    if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != BTF_MAGIC {
        return Err(BtfError::Malformed(
            "bad magic (only little-endian BTF is supported)",
        ));
    }
    let hdr_len = u32_at(data, 4)? as usize;
    let type_off = u32_at(data, 8)? as usize;
    let type_len = u32_at(data, 12)? as usize;
    let str_off = u32_at(data, 16)? as usize;
    let str_len = u32_at(data, 20)? as usize;
    let types = data
        .get(hdr_len + type_off..hdr_len + type_off + type_len)
        .ok_or(BtfError::Malformed("type section out of bounds"))?;
    let strings = data
        .get(hdr_len + str_off..hdr_len + str_off + str_len)
        .ok_or(BtfError::Malformed("string section out of bounds"))?;
    Ok((types, strings))
}

pub fn member_offset(path: &Path, strukt: &str, member: &str) -> Result<u32, BtfError> {
    let data = std::fs::read(path).map_err(|source| BtfError::Read {
        path: path.display().to_string(),
        source,
    })?;
    member_offset_in(&data, strukt, member)
}

pub fn member_offset_in(data: &[u8], strukt: &str, member: &str) -> Result<u32, BtfError> {
    let (types, strings) = sections(data)?;

    let mut pos = 0;
    while pos + 12 <= types.len() {
        let name_off = u32_at(types, pos)?;
        let info = u32_at(types, pos + 4)?;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let kind_flag = info >> 31 == 1;
        pos += 12;
        let extra = match kind {
            1 | 14 | 17 => 4,   // INT, VAR, DECL_TAG
            3 => 12,            // ARRAY
            4 | 5 => 12 * vlen, // STRUCT, UNION
            6 => 8 * vlen,      // ENUM
            13 => 8 * vlen,     // FUNC_PROTO
            15 => 12 * vlen,    // DATASEC
            19 => 12 * vlen,    // ENUM64
            _ => 0,             // PTR, FWD, TYPEDEF, qualifiers, FUNC, FLOAT, TYPE_TAG
        };
        if kind == KIND_STRUCT && str_at(strings, name_off) == strukt.as_bytes() {
            for m in 0..vlen {
                let mpos = pos + m * 12;
                let mname = u32_at(types, mpos)?;
                let moff = u32_at(types, mpos + 8)?;
                if str_at(strings, mname) == member.as_bytes() {
                    let bits = if kind_flag { moff & 0x00ff_ffff } else { moff };
                    if bits % 8 != 0 {
                        return Err(BtfError::Malformed("member is a bitfield"));
                    }
                    return Ok(bits / 8);
                }
            }
        }
        pos += extra;
    }
    Err(BtfError::NoMember {
        strukt: strukt.to_owned(),
        member: member.to_owned(),
    })
}

/// The number of arguments tracepoint `tp` hands a tp_btf program (its
/// `btf_trace_<tp>` typedef, a pointer to a function whose first argument is the
/// context), or `None` if the kernel's BTF has no such tracepoint.
pub fn tracepoint_args_in(data: &[u8], tp: &str) -> Result<Option<usize>, BtfError> {
    let (types, strings) = sections(data)?;
    // (kind, name, type, vlen) by type id; id 0 is void.
    let mut all = vec![(0u32, 0u32, 0u32, 0usize)];
    let mut pos = 0;
    while pos + 12 <= types.len() {
        let name_off = u32_at(types, pos)?;
        let info = u32_at(types, pos + 4)?;
        let ty = u32_at(types, pos + 8)?;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        all.push((kind, name_off, ty, vlen));
        pos += 12
            + match kind {
                1 | 14 | 17 => 4,
                3 => 12,
                4 | 5 | 15 | 19 => 12 * vlen,
                6 | 13 => 8 * vlen,
                _ => 0,
            };
    }
    const KIND_PTR: u32 = 2;
    const KIND_TYPEDEF: u32 = 8;
    const KIND_FUNC_PROTO: u32 = 13;
    let want = format!("btf_trace_{tp}");
    let Some(&(_, _, ptr, _)) = all
        .iter()
        .find(|(k, n, _, _)| *k == KIND_TYPEDEF && str_at(strings, *n) == want.as_bytes())
    else {
        return Ok(None);
    };
    let Some(&(KIND_PTR, _, proto, _)) = all.get(ptr as usize) else {
        return Err(BtfError::Malformed("tracepoint typedef is not a pointer"));
    };
    match all.get(proto as usize) {
        // The first argument is the tracepoint's context, not one of its arguments.
        Some(&(KIND_FUNC_PROTO, _, _, vlen)) => Ok(Some(vlen.saturating_sub(1))),
        _ => Err(BtfError::Malformed(
            "tracepoint typedef is not a function pointer",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracepoint_arguments_of_the_running_kernel() {
        let data = std::fs::read(VMLINUX).expect("kernel BTF");
        // sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
        assert_eq!(
            tracepoint_args_in(&data, "sched_process_exec").expect("btf"),
            Some(3)
        );
        assert_eq!(
            tracepoint_args_in(&data, "no_such_tracepoint").expect("btf"),
            None
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            member_offset_in(&[0u8; 30], "task_struct", "tgid"),
            Err(BtfError::Malformed(_))
        ));
    }

    #[test]
    fn finds_task_struct_tgid_in_running_kernel() {
        // Every kernel this agent supports ships BTF; a missing file is a real failure.
        let tgid = member_offset(Path::new(VMLINUX), "task_struct", "tgid").expect("tgid");
        let pid = member_offset(Path::new(VMLINUX), "task_struct", "pid").expect("pid");
        assert_eq!(tgid, pid + 4, "tgid follows pid in task_struct");
    }
}
