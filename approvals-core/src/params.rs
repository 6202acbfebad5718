//! Turning typed values into approval parameters without losing what reviewers must see.
//!
//! `serde_json::to_value` writes a NaN or an infinite float as `null`, so `{"ratio": NaN}`
//! and `{"ratio": null}` would share one digest and reviewers would approve `null`. Every
//! typed value that becomes a parameter goes through [`to_params`], which refuses non-finite
//! numbers and names where they are.

use std::fmt;

use serde::Serialize;
use serde::ser::{self, Impossible};
use serde_json::Value;

/// A value could not become approval parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamsError {
    /// A float is NaN or infinite: JSON has no such number, and writing it as `null` would
    /// show reviewers something else than the action uses.
    #[error(
        "parameter {path} is {value}, which JSON cannot carry (it would read as null); send a finite number, or a string such as \"NaN\" if the action means it"
    )]
    NonFinite {
        /// Where, as a JSON path (`$.limits[2].ratio`).
        path: String,
        /// `NaN`, `inf` or `-inf`.
        value: String,
    },
    /// The value's `Serialize` failed, or produced something JSON cannot hold (a map with
    /// non-string keys, say).
    #[error("the parameters cannot be written as JSON: {0}")]
    Serialize(String),
}

/// `value` as JSON parameters, refusing NaN and infinite floats anywhere inside it.
///
/// ```
/// use approvals_core::params::{to_params, ParamsError};
/// assert_eq!(to_params(&[1.5, 2.0]).unwrap(), serde_json::json!([1.5, 2.0]));
/// assert!(matches!(to_params(&[1.0, f64::NAN]), Err(ParamsError::NonFinite { .. })));
/// ```
pub fn to_params<T: Serialize + ?Sized>(value: &T) -> Result<Value, ParamsError> {
    value.serialize(FiniteCheck { path: Path::Root })?;
    serde_json::to_value(value).map_err(|e| ParamsError::Serialize(e.to_string()))
}

/// Where the checker is, kept as a linked list on the stack: nothing is allocated unless a
/// non-finite number is found.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => f.write_str("$"),
            Path::Key(parent, key) => write!(f, "{parent}.{key}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

impl ser::Error for ParamsError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ParamsError::Serialize(msg.to_string())
    }
}

/// A serializer that writes nothing and fails on the first non-finite float.
struct FiniteCheck<'a> {
    path: Path<'a>,
}

impl FiniteCheck<'_> {
    fn float(&self, v: f64) -> Result<(), ParamsError> {
        if v.is_finite() {
            return Ok(());
        }
        Err(ParamsError::NonFinite {
            path: self.path.to_string(),
            value: if v.is_nan() {
                "NaN".into()
            } else if v > 0.0 {
                "inf".into()
            } else {
                "-inf".into()
            },
        })
    }
}

/// Checks the elements of a sequence, tuple, map or struct.
struct Compound<'a> {
    path: Path<'a>,
    index: usize,
    key: Option<String>,
}

impl<'a> Compound<'a> {
    fn new(path: Path<'a>) -> Self {
        Compound {
            path,
            index: 0,
            key: None,
        }
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ParamsError> {
        let path = Path::Index(&self.path, self.index);
        self.index += 1;
        value.serialize(FiniteCheck { path })
    }

    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), ParamsError> {
        value.serialize(FiniteCheck {
            path: Path::Key(&self.path, key),
        })
    }
}

macro_rules! accept {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, _v: $ty) -> Result<(), ParamsError> { Ok(()) })*
    };
}

impl<'a> ser::Serializer for FiniteCheck<'a> {
    type Ok = ();
    type Error = ParamsError;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    accept!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_unit_struct(&'static str),
    );

    fn serialize_f32(self, v: f32) -> Result<(), ParamsError> {
        self.float(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), ParamsError> {
        self.float(v)
    }
    fn serialize_none(self) -> Result<(), ParamsError> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), ParamsError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), ParamsError> {
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
    ) -> Result<(), ParamsError> {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), ParamsError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), ParamsError> {
        value.serialize(FiniteCheck {
            path: Path::Key(&self.path, variant),
        })
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'a>, ParamsError> {
        Ok(Compound::new(self.path))
    }
    fn serialize_tuple(self, _len: usize) -> Result<Compound<'a>, ParamsError> {
        Ok(Compound::new(self.path))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, ParamsError> {
        Ok(Compound::new(self.path))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, ParamsError> {
        Ok(Compound::new(self.path))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'a>, ParamsError> {
        Ok(Compound::new(self.path))
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, ParamsError> {
        Ok(Compound::new(self.path))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, ParamsError> {
        Ok(Compound::new(self.path))
    }
}

impl ser::SerializeSeq for Compound<'_> {
    type Ok = ();
    type Error = ParamsError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ParamsError> {
        self.element(value)
    }
    fn end(self) -> Result<(), ParamsError> {
        Ok(())
    }
}

impl ser::SerializeTuple for Compound<'_> {
    type Ok = ();
    type Error = ParamsError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ParamsError> {
        self.element(value)
    }
    fn end(self) -> Result<(), ParamsError> {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for Compound<'_> {
    type Ok = ();
    type Error = ParamsError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ParamsError> {
        self.element(value)
    }
    fn end(self) -> Result<(), ParamsError> {
        Ok(())
    }
}

impl ser::SerializeTupleVariant for Compound<'_> {
    type Ok = ();
    type Error = ParamsError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ParamsError> {
        self.element(value)
    }
    fn end(self) -> Result<(), ParamsError> {
        Ok(())
    }
}

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = ParamsError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), ParamsError> {
        // Keys are checked too (a float key is written as a string by serde_json, NaN as
        // "NaN"), and remembered for the path of the value.
        key.serialize(FiniteCheck { path: self.path })?;
        self.key = Some(key.serialize(KeyName).unwrap_or_else(|_| "?".to_owned()));
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ParamsError> {
        let key = self.key.take().unwrap_or_default();
        let path = Path::Key(&self.path, &key);
        value.serialize(FiniteCheck { path })
    }
    fn end(self) -> Result<(), ParamsError> {
        Ok(())
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = ParamsError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), ParamsError> {
        self.field(key, value)
    }
    fn end(self) -> Result<(), ParamsError> {
        Ok(())
    }
}

impl ser::SerializeStructVariant for Compound<'_> {
    type Ok = ();
    type Error = ParamsError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), ParamsError> {
        self.field(key, value)
    }
    fn end(self) -> Result<(), ParamsError> {
        Ok(())
    }
}

/// The text of a map key, for the path in an error.
struct KeyName;

macro_rules! key_display {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, v: $ty) -> Result<String, ParamsError> { Ok(v.to_string()) })*
    };
}

impl ser::Serializer for KeyName {
    type Ok = String;
    type Error = ParamsError;
    type SerializeSeq = Impossible<String, ParamsError>;
    type SerializeTuple = Impossible<String, ParamsError>;
    type SerializeTupleStruct = Impossible<String, ParamsError>;
    type SerializeTupleVariant = Impossible<String, ParamsError>;
    type SerializeMap = Impossible<String, ParamsError>;
    type SerializeStruct = Impossible<String, ParamsError>;
    type SerializeStructVariant = Impossible<String, ParamsError>;

    key_display!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
    );

    fn serialize_bytes(self, _v: &[u8]) -> Result<String, ParamsError> {
        Err(ser::Error::custom("a byte-string key"))
    }
    fn serialize_none(self) -> Result<String, ParamsError> {
        Err(ser::Error::custom("a missing key"))
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<String, ParamsError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<String, ParamsError> {
        Err(ser::Error::custom("a unit key"))
    }
    fn serialize_unit_struct(self, name: &'static str) -> Result<String, ParamsError> {
        Ok(name.to_owned())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<String, ParamsError> {
        Ok(variant.to_owned())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<String, ParamsError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _value: &T,
    ) -> Result<String, ParamsError> {
        Ok(variant.to_owned())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, ParamsError> {
        Err(ser::Error::custom("a sequence key"))
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, ParamsError> {
        Err(ser::Error::custom("a tuple key"))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, ParamsError> {
        Err(ser::Error::custom("a tuple key"))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, ParamsError> {
        Err(ser::Error::custom("a tuple key"))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, ParamsError> {
        Err(ser::Error::custom("a map key"))
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, ParamsError> {
        Err(ser::Error::custom("a struct key"))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, ParamsError> {
        Err(ser::Error::custom("a struct key"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use proptest::prelude::*;
    use serde::Serialize;
    use serde_json::json;

    use super::{ParamsError, to_params};

    #[derive(Serialize)]
    struct Limits {
        name: String,
        ratio: f64,
        history: Vec<Option<f32>>,
        nested: BTreeMap<String, (u8, f64)>,
    }

    #[derive(Serialize)]
    enum Shape {
        Circle { r: f64 },
        Pair(f64, f64),
        Scale(f32),
    }

    fn limits(ratio: f64, last: f32, inner: f64) -> Limits {
        Limits {
            name: "x".into(),
            ratio,
            history: vec![Some(1.0), None, Some(last)],
            nested: BTreeMap::from([("k".into(), (1, inner))]),
        }
    }

    fn non_finite(result: Result<serde_json::Value, ParamsError>) -> (String, String) {
        match result {
            Err(ParamsError::NonFinite { path, value }) => (path, value),
            other => panic!("expected NonFinite, got {other:?}"),
        }
    }

    #[test]
    fn finite_values_pass_through_unchanged() {
        let v = to_params(&limits(0.5, 2.0, -3.25)).expect("finite");
        assert_eq!(
            v,
            json!({"name": "x", "ratio": 0.5, "history": [1.0, null, 2.0], "nested": {"k": [1, -3.25]}})
        );
        assert_eq!(to_params(&f64::MAX).expect("max"), json!(f64::MAX));
        assert_eq!(to_params(&-0.0f64).expect("-0"), json!(-0.0));
    }

    #[test]
    fn every_non_finite_float_is_refused_with_its_path() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -f64::NAN] {
            let (path, _) = non_finite(to_params(&limits(bad, 1.0, 1.0)));
            assert_eq!(path, "$.ratio");
            let (path, _) = non_finite(to_params(&limits(1.0, 1.0, bad)));
            assert_eq!(path, "$.nested.k[1]");
            let (path, _) = non_finite(to_params(&[Shape::Circle { r: bad }]));
            assert_eq!(path, "$[0].r");
            let (path, _) = non_finite(to_params(&Shape::Pair(1.0, bad)));
            assert_eq!(path, "$[1]");
            let (path, _) = non_finite(to_params(&Some(bad)));
            assert_eq!(path, "$");
            let map: HashMap<String, f64> = HashMap::from([("a b".into(), bad)]);
            let (path, _) = non_finite(to_params(&map));
            assert_eq!(path, "$.a b");
        }
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let (path, _) = non_finite(to_params(&limits(1.0, bad, 1.0)));
            assert_eq!(path, "$.history[2]");
            let (path, _) = non_finite(to_params(&Shape::Scale(bad)));
            assert_eq!(path, "$.Scale");
        }
        assert_eq!(non_finite(to_params(&f64::NAN)).1, "NaN");
        assert_eq!(non_finite(to_params(&f64::INFINITY)).1, "inf");
        assert_eq!(non_finite(to_params(&f64::NEG_INFINITY)).1, "-inf");
    }

    #[test]
    fn a_float_map_key_that_is_not_finite_is_refused() {
        // serde_json writes float keys as strings ("NaN" for a NaN): refused like a value.
        struct FloatKeys(f64);
        impl Serialize for FloatKeys {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry(&self.0, &1)?;
                map.end()
            }
        }
        assert_eq!(
            to_params(&FloatKeys(1.5)).expect("finite"),
            json!({"1.5": 1})
        );
        assert_eq!(non_finite(to_params(&FloatKeys(f64::NAN))).1, "NaN");
    }

    proptest! {
        /// Whatever the float, it either passes and reads back as itself, or it is not finite
        /// and is refused: never turned into `null`.
        #[test]
        fn no_float_becomes_null(bits in any::<u64>()) {
            let f = f64::from_bits(bits);
            match to_params(&[f]) {
                Ok(v) => {
                    prop_assert!(f.is_finite());
                    prop_assert_eq!(v[0].as_f64(), Some(f));
                }
                Err(ParamsError::NonFinite { .. }) => prop_assert!(!f.is_finite()),
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }
    }
}
