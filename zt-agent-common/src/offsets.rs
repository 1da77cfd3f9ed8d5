//! Kernel struct offsets. Rust eBPF has no CO-RE field relocation, so userspace
//! finds each offset in the running kernel's BTF at start-up and sets it in a `u32`
//! global of the eBPF object (by symbol name) before the programs are verified.

/// Where userspace finds an offset in the kernel's BTF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Locate {
    /// The byte offset of `member` in `struct strukt`.
    Member {
        strukt: &'static str,
        member: &'static str,
    },
    /// Where `struct inode` keeps its change time, whose layout changed in Linux 6.11.
    InodeCtime(CtimePart),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtimePart {
    Sec,
    Nsec,
}

/// One offset global of the eBPF object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffset {
    /// The global's symbol name.
    pub global: &'static str,
    pub locate: Locate,
}

/// The offset globals, once: hands the list `GLOBAL: member(struct, field)` or
/// `GLOBAL: inode_ctime(Sec | Nsec)` to the macro named `$then`. The eBPF crate
/// defines its globals from it, and this crate builds [`OFFSETS`] from it, so the two
/// sides cannot name different globals.
#[macro_export]
macro_rules! kernel_offsets {
    ($then:ident) => {
        $then! {
            BPRM_FILE_OFFSET: member(linux_binprm, file),
            BPRM_FILENAME_OFFSET: member(linux_binprm, filename),
            FILE_INODE_OFFSET: member(file, f_inode),
            INODE_SB_OFFSET: member(inode, i_sb),
            INODE_INO_OFFSET: member(inode, i_ino),
            SB_DEV_OFFSET: member(super_block, s_dev),
            TASK_REAL_PARENT_OFFSET: member(task_struct, real_parent),
            TASK_CGROUPS_OFFSET: member(task_struct, cgroups),
            CSS_SET_DFL_CGRP_OFFSET: member(css_set, dfl_cgrp),
            TASK_TGID_OFFSET: member(task_struct, tgid),
            TASK_GROUP_LEADER_OFFSET: member(task_struct, group_leader),
            TASK_START_BOOTTIME_OFFSET: member(task_struct, start_boottime),
            CGROUP_KN_OFFSET: member(cgroup, kn),
            CGROUP_ROOT_OFFSET: member(cgroup, root),
            KERNFS_NODE_ID_OFFSET: member(kernfs_node, id),
            CGROUP_ROOT_HIERARCHY_ID_OFFSET: member(cgroup_root, hierarchy_id),
            INODE_CTIME_SEC_OFFSET: inode_ctime(Sec),
            INODE_CTIME_NSEC_OFFSET: inode_ctime(Nsec),
        }
    };
}

macro_rules! locate {
    (member($strukt:ident, $member:ident)) => {
        Locate::Member {
            strukt: stringify!($strukt),
            member: stringify!($member),
        }
    };
    (inode_ctime($part:ident)) => {
        Locate::InodeCtime(CtimePart::$part)
    };
}

macro_rules! offset_table {
    ($($global:ident: $how:ident($($arg:ident),*)),* $(,)?) => {
        /// Every offset global of the eBPF object and where its value comes from, in
        /// the order userspace looks them up.
        pub const OFFSETS: [KernelOffset; [$(stringify!($global)),*].len()] = [
            $(KernelOffset {
                global: stringify!($global),
                locate: locate!($how($($arg),*)),
            }),*
        ];
    };
}

kernel_offsets!(offset_table);
