//! Everything that crosses the kernel/user boundary, defined once: map names and
//! capacities, the program table, key and value layouts, verdicts, reasons, event
//! records and the kernel offsets userspace hands to the programs.
//!
//! Every type is `#[repr(C)]` with fixed-width fields and explicit padding, and
//! carries a size assertion so that both sides agree byte for byte. One module per
//! feature, re-exported here (`zt_agent_common::X`), except the offset table, which
//! only the loader reads (`offsets::OFFSETS`).
#![no_std]

/// A fieldless enum that travels as a number in a boundary record or counter index:
/// its wire value, its name in events and metrics, every value in order, and a
/// checked conversion from the wire (the error is the unknown raw value).
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $repr:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $str:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[repr($repr)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $value, )*
        }

        impl $name {
            /// Every value, in wire order.
            pub const ALL: [$name; [$($name::$variant),*].len()] = [$($name::$variant),*];

            /// The name in events and metrics.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $str, )*
                }
            }
        }

        impl TryFrom<$repr> for $name {
            type Error = $repr;

            fn try_from(raw: $repr) -> Result<Self, $repr> {
                $( if raw == $value { return Ok(Self::$variant); } )*
                Err(raw)
            }
        }
    };
}

pub mod counters;
pub mod dns;
pub mod event;
pub mod exec;
pub mod grants;
pub mod identity;
pub mod maps;
pub mod offsets;
pub mod policy;
pub mod programs;
pub mod shadow;
pub mod sock;
pub mod task;
pub mod traffic;

pub use counters::*;
pub use dns::*;
pub use event::*;
pub use exec::*;
pub use grants::*;
pub use identity::*;
pub use maps::*;
pub use policy::*;
pub use programs::*;
pub use shadow::*;
pub use sock::*;
pub use task::*;
pub use traffic::*;

#[cfg(test)]
mod tests {
    use super::errors::ErrorSlot;
    use super::{EventKind, Reason, Verdict};

    /// Every value converts back from its wire number, names are distinct, and the
    /// numbers right past the last value are refused.
    macro_rules! check_wire_enum {
        ($ty:ty, $repr:ty) => {{
            let all = <$ty>::ALL;
            for (i, v) in all.iter().enumerate() {
                assert_eq!(<$ty>::try_from(*v as $repr), Ok(*v));
                for w in &all[i + 1..] {
                    assert_ne!(v.as_str(), w.as_str());
                }
            }
            let past = all.iter().map(|v| *v as $repr).max().unwrap_or(0) + 1;
            assert_eq!(<$ty>::try_from(past), Err(past));
        }};
    }

    #[test]
    fn wire_enums_round_trip() {
        check_wire_enum!(Verdict, u8);
        check_wire_enum!(EventKind, u8);
        check_wire_enum!(Reason, u8);
        check_wire_enum!(ErrorSlot, u32);
        assert_eq!(EventKind::try_from(0), Err(0));
    }

    #[test]
    fn error_names_follow_the_slots() {
        for slot in ErrorSlot::ALL {
            assert_eq!(super::errors::NAMES[slot as usize], slot.as_str());
        }
        assert_eq!(super::errors::NAMES.len(), super::errors::COUNT as usize);
    }

    #[test]
    fn program_names_are_distinct() {
        for (i, p) in super::PROGRAMS.iter().enumerate() {
            assert!(
                super::PROGRAMS[i + 1..].iter().all(|q| q.name != p.name),
                "{}",
                p.name
            );
        }
    }

    #[test]
    fn offset_globals_are_distinct() {
        let all = super::offsets::OFFSETS;
        for (i, o) in all.iter().enumerate() {
            assert!(
                all[i + 1..].iter().all(|q| q.global != o.global),
                "{}",
                o.global
            );
        }
    }
}
