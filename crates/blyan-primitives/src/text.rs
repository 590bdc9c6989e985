//! The one text form of each primitive: `FromStr` and serde go through the type's own `parse`
//! and `Display`, so JSON, YAML, CLI arguments and logs spell a value the same way.

/// Implements `FromStr` (through `$ty::parse`) and serde as the `Display` text.
macro_rules! text_form {
    ($ty:ty) => {
        impl ::std::str::FromStr for $ty {
            type Err = $crate::Error;
            fn from_str(input: &str) -> $crate::Result<Self> {
                Self::parse(input)
            }
        }

        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(
                &self,
                serializer: S,
            ) -> ::std::result::Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> ::std::result::Result<Self, D::Error> {
                let text = <::std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::parse(&text).map_err(::serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use text_form;
