//! How replies look: aligned tables for people, proto enum names and RFC
//! 3339 times for both people and `--json`.

use image_ledger::grpc::time_of;
use prost_types::Timestamp;
use time::format_description::well_known::Rfc3339;

/// Lines of left-aligned columns, each as wide as its widest cell, under a
/// header row.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, (cell, width)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(cell);
            if i + 1 < widths.len() {
                out.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
            }
        }
        out.trim_end().to_owned()
    };
    let mut lines = vec![line(&mut header.iter().copied())];
    for row in rows {
        lines.push(line(&mut row.iter().map(String::as_str)));
    }
    lines.join("\n")
}

/// A proto timestamp as RFC 3339 ("" when absent or out of range).
pub fn time(timestamp: Option<&Timestamp>) -> String {
    timestamp
        .and_then(time_of)
        .and_then(|time| time.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// The proto name of an enum value, as grpcurl prints it (the number when
/// this build does not know it).
pub fn enum_name<E>(value: i32) -> String
where
    E: TryFrom<i32> + EnumName,
{
    match E::try_from(value) {
        Ok(known) => known.name().to_owned(),
        Err(_) => value.to_string(),
    }
}

/// The generated enums' `as_str_name`, as a trait.
pub trait EnumName {
    /// The value's name in the proto.
    fn name(&self) -> &'static str;
}

macro_rules! enum_names {
    ($($ty:ty),*) => {
        $(impl EnumName for $ty {
            fn name(&self) -> &'static str {
                self.as_str_name()
            }
        })*
    };
}

use image_ledger::grpc::pb;
enum_names!(
    pb::ImageType,
    pb::ImageState,
    pb::ImageSource,
    pb::LicenseType
);

/// Parses an RFC 3339 instant.
pub fn instant(raw: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("not an RFC 3339 time such as 2027-01-31T00:00:00Z: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_aligns_columns_to_the_widest_cell() {
        let rows = vec![
            vec!["img-1".to_owned(), "a long name".to_owned(), "x".to_owned()],
            vec!["img-22".to_owned(), "b".to_owned(), "".to_owned()],
        ];
        assert_eq!(
            table(&["ID", "NAME", "Z"], &rows),
            "ID      NAME         Z\nimg-1   a long name  x\nimg-22  b"
        );
    }

    #[test]
    fn unknown_enum_values_print_as_numbers() {
        assert_eq!(enum_name::<pb::ImageState>(2), "NORMAL");
        assert_eq!(enum_name::<pb::ImageState>(99), "99");
    }
}
