//! Where data comes from, below the config that names it and the loaders that read it: the
//! embedded data set's name and the file formats runner reads, by extension.

use std::path::Path;

pub const BUILTIN_RED_WINE: &str = "builtin:winequality-red";

/// The file formats runner reads, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated, optionally gzip-, zstd- or zlib-compressed (`.csv.gz`).
    Csv,
    /// Tab-separated.
    Tsv,
    Parquet,
    /// Newline-delimited JSON: one object per line.
    Ndjson,
    /// Arrow IPC (Feather version 2).
    Ipc,
}

/// What `Format::of` accepts, for error messages.
pub const ACCEPTED_EXTENSIONS: &str =
    ".csv, .csv.gz, .tsv, .tsv.gz, .parquet, .ndjson, .jsonl, .arrow, .feather, .ipc";

impl Format {
    /// The format of a path by its extension (a trailing `.gz` or `.zst` on CSV and TSV).
    pub fn of(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let name = name
            .strip_suffix(".gz")
            .or_else(|| name.strip_suffix(".zst"))
            .filter(|n| n.ends_with(".csv") || n.ends_with(".tsv"))
            .unwrap_or(&name);
        let ext = name.rsplit_once('.')?.1;
        Some(match ext {
            "csv" => Format::Csv,
            "tsv" | "tab" => Format::Tsv,
            "parquet" | "pq" => Format::Parquet,
            "ndjson" | "jsonl" => Format::Ndjson,
            "arrow" | "feather" | "ipc" => Format::Ipc,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_extension() {
        let of = |p: &str| Format::of(Path::new(p));
        assert_eq!(of("a/wine.csv.gz"), Some(Format::Csv));
        assert_eq!(of("wine.TSV"), Some(Format::Tsv));
        assert_eq!(of("wine.jsonl"), Some(Format::Ndjson));
        assert_eq!(of("wine.feather"), Some(Format::Ipc));
        assert_eq!(
            of("wine.parquet.gz"),
            None,
            "only CSV and TSV are read compressed"
        );
        assert_eq!(of("wine.xlsx"), None);
    }
}
