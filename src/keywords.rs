//! Enums that are spelled as a fixed keyword on the command line and in the environment.

/// `FromStr` (case-insensitive, surrounding space ignored, aliases accepted) and `Display` (the
/// first keyword of each variant) for a fieldless enum:
///
/// ```ignore
/// keyword_enum!(Precision, "dtype", { F32 => "f32" | "fp32", Bf16 => "bf16", F16 => "f16" });
/// ```
///
/// An unknown word is an error that names what was expected: `unknown dtype "f64"; expected
/// f32, bf16 or f16`.
macro_rules! keyword_enum {
    ($ty:ident, $what:literal, { $($var:ident => $name:literal $(| $alias:literal)*),+ $(,)? }) => {
        impl std::str::FromStr for $ty {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s.trim().to_ascii_lowercase().as_str() {
                    $($name $(| $alias)* => Ok(Self::$var),)+
                    _ => {
                        let names = [$($name),+];
                        let expected = match names.split_last() {
                            Some((last, [])) => last.to_string(),
                            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                            None => String::new(),
                        };
                        Err(format!("unknown {} {s:?}; expected {expected}", $what))
                    }
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(match self {
                    $(Self::$var => $name,)+
                })
            }
        }
    };
}

pub(crate) use keyword_enum;
