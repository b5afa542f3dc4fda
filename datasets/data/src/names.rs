//! What the crate knows by name: the datasets that [`crate::prepare`] caches
//! and the splits every reader loads.

use std::fmt;
use std::str::FromStr;

use crate::error::{DataError, Result};

/// A dataset split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Split {
    /// Training data.
    Train,
    /// Validation data (for CIFAR-10, which has none, the test batch).
    Valid,
    /// Test data.
    Test,
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        })
    }
}

/// The datasets that [`prepare`](crate::prepare()) knows how to unpack and cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DatasetName {
    /// CIFAR-10 (shipped JPEG archive, official binary batches or their tar.gz).
    Cifar10,
    /// Tiny-ImageNet 64x64 train subset (ImageNet-64 stand-in).
    TinyImagenetTrain,
    /// Tiny-ImageNet 64x64 validation split (ImageNet-64 stand-in).
    TinyImagenetVal,
    /// English Wikipedia slice (Wiki-40B stand-in).
    Wikipedia,
    /// IMDB reviews (LRA Text; small MLM corpus).
    Imdb,
    /// WikiText-2 valid + test.
    Wikitext2,
    /// WikiText-103 valid + test.
    Wikitext103,
}

impl DatasetName {
    /// Every dataset, in a stable order.
    pub const ALL: [DatasetName; 7] = [
        DatasetName::Cifar10,
        DatasetName::TinyImagenetTrain,
        DatasetName::TinyImagenetVal,
        DatasetName::Wikipedia,
        DatasetName::Imdb,
        DatasetName::Wikitext2,
        DatasetName::Wikitext103,
    ];

    /// The name used on the command line and as the cache folder.
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetName::Cifar10 => "cifar10",
            DatasetName::TinyImagenetTrain => "tiny-imagenet-train",
            DatasetName::TinyImagenetVal => "tiny-imagenet-val",
            DatasetName::Wikipedia => "wikipedia",
            DatasetName::Imdb => "imdb",
            DatasetName::Wikitext2 => "wikitext-2",
            DatasetName::Wikitext103 => "wikitext-103",
        }
    }

    /// File name of the shipped archive in `shared/data`.
    pub fn shipped_archive(self) -> &'static str {
        match self {
            DatasetName::Cifar10 => "cifar10-jpeg.tar.xz",
            DatasetName::TinyImagenetTrain => "tiny-imagenet-64-train-subset.tar.xz",
            DatasetName::TinyImagenetVal => "tiny-imagenet-64-val.tar.xz",
            DatasetName::Wikipedia => "wikipedia-en-aa.tar.xz",
            DatasetName::Imdb => "imdb.tar.xz",
            DatasetName::Wikitext2 => "wikitext-2-eval.tar.xz",
            DatasetName::Wikitext103 => "wikitext-103-eval.tar.xz",
        }
    }

    /// SHA-256 of the shipped archive, so a copy can be checked even where
    /// its `SHA256SUMS` did not travel with it.
    pub fn shipped_sha256(self) -> &'static str {
        match self {
            DatasetName::Cifar10 => {
                "1b86d5dd9cd513f6e0a486f905300c1015ac925c3cfca54c05c8c9070b8e5a90"
            }
            DatasetName::TinyImagenetTrain => {
                "bd32fc23eae3b337015f9a78d0d3d08927ad7ceac69cda2d1aaa966bf0279bca"
            }
            DatasetName::TinyImagenetVal => {
                "78b5468075202193240a6ade54049b6c7a3ff59d3ecc0f36ae6a852c1faec66d"
            }
            DatasetName::Wikipedia => {
                "3d0e6fae3cca25c3cadd5f24389acdc160c80c56d50339bb37f8ff48059090b0"
            }
            DatasetName::Imdb => "852f68d5752d6f0f4bc041668bf1d223a3642696d21e69bd138d0b1993c7948b",
            DatasetName::Wikitext2 => {
                "619ccdf5dc7fe64002df3bd1fafbc980300db5c6c6a0e0999a78e2076896d0ed"
            }
            DatasetName::Wikitext103 => {
                "441362e63484e3054464846b4359c4f3f2a52d9bd173d9dd35324c02d41245a1"
            }
        }
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DatasetName {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self> {
        DatasetName::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| DataError::UnknownDataset {
                name: s.to_string(),
                known: DatasetName::ALL.map(|d| d.as_str()).join(", "),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_names_round_trip_and_unknown_lists_known() {
        for d in DatasetName::ALL {
            assert_eq!(d.as_str().parse::<DatasetName>().unwrap(), d);
        }
        let err = "cifar100".parse::<DatasetName>().unwrap_err().to_string();
        assert!(
            err.contains("cifar100") && err.contains("wikitext-103"),
            "{err}"
        );
    }
}
