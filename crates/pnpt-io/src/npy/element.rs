//! The element types a `.npy` file can hold and their byte encodings.

/// Only this module implements [`NpyElement`]: the dtype table is closed.
mod sealed {
    pub trait Sealed {}
}

/// An element type with a `.npy` dtype: `f32` (`<f4`), `f64` (`<f8`), `i32` (`<i4`),
/// `i64` (`<i8`) and `u8` (`|u1`; reading also accepts numpy bools, `|b1`).
pub trait NpyElement: Copy + Default + sealed::Sealed {
    /// The dtype written to headers.
    const DESCR: &'static str;
    /// Bytes per element.
    const SIZE: usize;
    /// Whether a header's `descr` is readable as this type.
    fn accepts(descr: &str) -> bool {
        descr == Self::DESCR
    }
    /// Decodes one element from `SIZE` little-endian bytes.
    fn from_le(bytes: &[u8]) -> Self;
    /// Appends the `SIZE` little-endian bytes of `self`.
    fn put_le(self, out: &mut Vec<u8>);
}

macro_rules! element {
    ($t:ty, $descr:literal) => {
        impl sealed::Sealed for $t {}
        impl NpyElement for $t {
            const DESCR: &'static str = $descr;
            const SIZE: usize = std::mem::size_of::<$t>();
            fn from_le(bytes: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(bytes);
                <$t>::from_le_bytes(a)
            }
            fn put_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    };
}
element!(f32, "<f4");
element!(f64, "<f8");
element!(i32, "<i4");
element!(i64, "<i8");

impl sealed::Sealed for u8 {}
impl NpyElement for u8 {
    const DESCR: &'static str = "|u1";
    const SIZE: usize = 1;
    fn accepts(descr: &str) -> bool {
        // Byte order is moot for one byte; numpy bools are stored as 0/1 bytes.
        matches!(descr, "|u1" | "<u1" | ">u1" | "u1" | "|b1")
    }
    fn from_le(bytes: &[u8]) -> Self {
        bytes[0]
    }
    fn put_le(self, out: &mut Vec<u8>) {
        out.push(self)
    }
}
