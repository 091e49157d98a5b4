//! [`numbered_enum!`]: an enum whose variants are the numbers of an interface, declared once
//! with its list of every value and its decoder.

/// Declares a fieldless enum whose variants stand for fixed numbers (hypercall operations,
/// error codes, a guest argument's choices), and with it, written out from that one list:
/// - `ALL`, every variant in the order declared;
/// - `from_raw`, the variant a number stands for, `None` for any other number;
/// - the derives `Clone, Copy, Debug, PartialEq, Eq` (further ones may be given).
///
/// ```
/// abi::numbered_enum! {
///     /// What a light shows.
///     pub enum Light: u8 {
///         Red = 0,
///         Green = 2,
///     }
/// }
/// assert_eq!(Light::ALL, [Light::Red, Light::Green]);
/// assert_eq!(Light::from_raw(2), Some(Light::Green));
/// assert_eq!(Light::from_raw(1), None);
/// assert_eq!(Light::Green as u8, 2);
/// ```
///
/// The enum is `#[repr]` of the number type, so `variant as u64` (say) is its number.
#[macro_export]
macro_rules! numbered_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident: $repr:ident {
            $(
                $(#[$variant_meta:meta])*
                $variant:ident = $value:literal
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr($repr)]
        $vis enum $name {
            $(
                $(#[$variant_meta])*
                $variant = $value,
            )*
        }

        impl $name {
            /// Every value, in the order declared.
            pub const ALL: [$name; [$(stringify!($variant)),*].len()] = [$($name::$variant),*];

            /// The value `raw` stands for, if any.
            pub const fn from_raw(raw: $repr) -> Option<$name> {
                match raw {
                    $($value => Some($name::$variant),)*
                    _ => None,
                }
            }
        }
    };
}
