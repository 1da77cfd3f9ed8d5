//! Map names and capacities. The layouts of keys and values live with their feature.

/// Capacity of each per-family policy trie, egress and ingress alike (one entry per
/// distinct prefix per identity, plus one root entry per identity).
pub const POLICY_TRIE_CAPACITY: u32 = 1 << 18;
/// Capacity of the enrolled thread-group table.
pub const TASKS_CAPACITY: u32 = 1 << 16;
/// Capacity of the enrolled cgroup table.
pub const CGROUPS_CAPACITY: u32 = 1 << 14;
/// Ring buffer size in bytes (power of two, multiple of the page size).
pub const EVENTS_RING_BYTES: u32 = 1 << 20;
/// Capacity of the exe selector table (one entry per selected file).
pub const EXE_SELECTORS_CAPACITY: u32 = 4096;
/// Capacity of the uid/gid selector table.
pub const PRINCIPALS_CAPACITY: u32 = 4096;
/// Capacity of the exec allowlist table (identity, file) pairs.
pub const EXEC_ALLOW_CAPACITY: u32 = 1 << 14;
/// Capacity of the table of unenrolled tasks' egress destinations (LRU).
pub const SHADOW_CAPACITY: u32 = 1 << 14;
/// Capacity of the resolver's client table (an LRU: the oldest ports drop out). With
/// [`crate::DNS_CLIENT_BUDGET`] per identity, an entry outlives the time the resolver
/// takes to read its query by far, however hard one identity sends.
pub const DNS_CLIENTS_CAPACITY: u32 = 1 << 16;
/// Capacity of the learned-address table, all identities together.
pub const DNS_ALLOW_CAPACITY: u32 = 1 << 16;

/// Map names, as the kernel object names them and as they are pinned.
pub mod map_names {
    pub const TASKS: &str = "ZT_TASKS";
    pub const CGROUPS: &str = "ZT_CGROUPS";
    pub const POLICY_V4: &str = "ZT_POLICY_V4";
    pub const POLICY_V6: &str = "ZT_POLICY_V6";
    pub const SOCK_IDENTITY: &str = "ZT_SOCK_ID";
    pub const VERDICTS: &str = "ZT_VERDICTS";
    pub const ERRORS: &str = "ZT_ERRORS";
    pub const EVENTS: &str = "ZT_EVENTS";
    pub const IDENTITIES: &str = "ZT_IDENTITIES";
    pub const EXE_SELECTORS: &str = "ZT_EXE_SEL";
    pub const PRINCIPALS: &str = "ZT_PRINCIPALS";
    pub const EXEC_ALLOW: &str = "ZT_EXEC_ALLOW";
    pub const EXEC_VERDICTS: &str = "ZT_EXEC_VERDICTS";
    pub const SHADOW: &str = "ZT_SHADOW";
    pub const DNS_CONFIG: &str = "ZT_DNS_CONFIG";
    pub const DNS_CLIENTS: &str = "ZT_DNS_CLIENTS";
    pub const DNS_ALLOW: &str = "ZT_DNS_ALLOW";
    pub const TASK_COUNT: &str = "ZT_TASK_COUNT";
    pub const TASK_SHARE: &str = "ZT_TASK_SHARE";
    pub const TASK_REFUSED: &str = "ZT_TASK_REFUSED";
    pub const INGRESS_V4: &str = "ZT_IN_V4";
    pub const INGRESS_V6: &str = "ZT_IN_V6";
    pub const INGRESS_PORTS: &str = "ZT_IN_PORTS";
    pub const INGRESS_VERDICTS: &str = "ZT_IN_VERDICTS";
    pub const DNS_BUDGET: &str = "ZT_DNS_BUDGET";
    pub const GRANTS_V4: &str = "ZT_GRANTS_V4";
    pub const GRANTS_V6: &str = "ZT_GRANTS_V6";
    pub const TRAFFIC: &str = "ZT_TRAFFIC";
    pub const FLOWS: &str = "ZT_FLOWS";
    pub const IDENTITY_STATE: &str = "ZT_ID_STATE";
    pub const ALL: [&str; 30] = [
        TASKS,
        CGROUPS,
        POLICY_V4,
        POLICY_V6,
        SOCK_IDENTITY,
        VERDICTS,
        ERRORS,
        EVENTS,
        IDENTITIES,
        EXE_SELECTORS,
        PRINCIPALS,
        EXEC_ALLOW,
        EXEC_VERDICTS,
        SHADOW,
        DNS_CONFIG,
        DNS_CLIENTS,
        DNS_ALLOW,
        TASK_COUNT,
        TASK_SHARE,
        TASK_REFUSED,
        INGRESS_V4,
        INGRESS_V6,
        INGRESS_PORTS,
        INGRESS_VERDICTS,
        DNS_BUDGET,
        GRANTS_V4,
        GRANTS_V6,
        TRAFFIC,
        FLOWS,
        IDENTITY_STATE,
    ];
}
