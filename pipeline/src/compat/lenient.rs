//! Reading the parts of an SDK's message that tidemark only looks into (`context`), in the
//! message's own parse and without failing it: a member of another shape than expected
//! says nothing. Text is borrowed from the body when it has no escapes.
//!
//! Why not `serde_json::from_str` on the raw member afterwards: that scans the member a
//! second time, once per message (the ingest benchmark's `context` is 14% of a message).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::ingest::event::Text;

/// A value read from an object's members; any other JSON value reads as the default.
pub trait FromMembers<'de>: Default {
    /// Reads the value of member `key` from `map` (every member's value must be read).
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error>;
}

/// `T` read leniently (see [`FromMembers`]).
pub struct Lenient<T>(pub T);

impl<'de, T: FromMembers<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(MembersVisitor(PhantomData)).map(Lenient)
    }
}

struct MembersVisitor<T>(PhantomData<T>);

/// Visit methods of a lenient visitor for the JSON values it does not take: each reads
/// as `Default::default()`, arrays and objects skipped to their end.
macro_rules! anything_else_is_default {
    () => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Default::default())
        }
    };
}

impl<'de, T: FromMembers<'de>> Visitor<'de> for MembersVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let mut v = T::default();
        while let Some(Text(key)) = map.next_key::<Text>()? {
            v.member(&key, &mut map)?;
        }
        Ok(v)
    }

    fn visit_str<E>(self, _: &str) -> Result<T, E> {
        Ok(T::default())
    }

    anything_else_is_default!();
}

/// A string member's value, or none when it is not a string.
#[derive(Default)]
pub struct MaybeText<'a>(pub Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for MaybeText<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaybeText<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<MaybeText<'de>, E> {
                Ok(MaybeText(Some(Cow::Borrowed(s))))
            }
            fn visit_str<E>(self, s: &str) -> Result<MaybeText<'de>, E> {
                Ok(MaybeText(Some(Cow::Owned(s.to_string()))))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(MaybeText(None))
            }
            anything_else_is_default!();
        }
        d.deserialize_any(V)
    }
}

/// `{"name": …, "type": …}` (`context.library`, `.os`, `.device`).
#[derive(Default)]
pub struct Named<'a> {
    pub name: Option<Cow<'a, str>>,
    pub kind: Option<Cow<'a, str>>,
}

impl<'de: 'a, 'a> FromMembers<'de> for Named<'a> {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "name" => self.name = map.next_value::<MaybeText>()?.0,
            "type" => self.kind = map.next_value::<MaybeText>()?.0,
            _ => {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// What tidemark reads of a Segment message's `context`: the names that say the platform
/// and `traits` (where RudderStack's SDKs put identify's traits).
#[derive(Default)]
pub struct Context<'a> {
    pub library: Named<'a>,
    pub os: Named<'a>,
    pub device: Named<'a>,
    pub traits: Option<&'a RawValue>,
}

impl<'de: 'a, 'a> FromMembers<'de> for Context<'a> {
    fn member<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "library" => self.library = map.next_value::<Lenient<Named>>()?.0,
            "os" => self.os = map.next_value::<Lenient<Named>>()?.0,
            "device" => self.device = map.next_value::<Lenient<Named>>()?.0,
            "traits" => self.traits = Some(map.next_value()?),
            _ => {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

impl Context<'_> {
    /// The platform these names say ([`super::platform_of`]).
    pub fn platform(&self) -> Option<&'static str> {
        super::platform_of(
            self.os.name.as_deref(),
            self.device.kind.as_deref(),
            self.library.name.as_deref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(json: &str) -> Context<'_> {
        serde_json::from_str::<Lenient<Context>>(json).unwrap().0
    }

    #[test]
    fn names_are_read_and_other_shapes_say_nothing() {
        let c = context(
            r#"{"library":{"name":"analytics-python","version":"2.4.0"},"ip":"1.2.3.4",
               "os":{"name":"iOS","version":"17"},"device":{"type":"ios","id":[1,{"a":2}]},
               "traits":{"plan":"pro"}}"#,
        );
        assert_eq!(c.library.name.as_deref(), Some("analytics-python"));
        assert!(matches!(c.library.name, Some(Cow::Borrowed(_))), "borrowed");
        assert_eq!(c.os.name.as_deref(), Some("iOS"));
        assert_eq!(c.device.kind.as_deref(), Some("ios"));
        assert_eq!(c.traits.map(RawValue::get), Some(r#"{"plan":"pro"}"#));
        assert_eq!(c.platform(), Some("ios"));

        // members of other shapes: nothing, and the parse goes on
        let c = context(
            r#"{"library":"analytics.js","os":{"name":7},"device":[{"type":"android"}],
               "x":{"library":{"name":"swift"}}}"#,
        );
        assert!(c.library.name.is_none() && c.os.name.is_none());
        assert!(c.device.kind.is_none() && c.traits.is_none());
        for other in ["null", "3", "\"web\"", "[1,2]", "true"] {
            let c = context(other);
            assert_eq!(c.platform(), None, "{other}");
        }
        // escaped text is read as its value
        let c = context(r#"{"library":{"name":"analytics\u002dnode"}}"#);
        assert_eq!(c.library.name.as_deref(), Some("analytics-node"));
        assert_eq!(c.platform(), Some("server"));
    }

    #[test]
    fn invalid_json_is_still_an_error() {
        assert!(serde_json::from_str::<Lenient<Context>>(r#"{"library":{"name":}}"#).is_err());
    }
}
