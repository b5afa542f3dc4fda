//! Readers for the text corpora: the shipped Wikipedia slice (WikiExtractor
//! `<doc>` records), WikiText, IMDB reviews, and C4-style JSON lines.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::archive::{for_each_member, Flow};
use crate::cache::cache_dir;
use crate::error::{utf8, DataError, Result};
use crate::names::{DatasetName, Split};

/// One Wikipedia article.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WikiDoc {
    /// Page id.
    pub id: u64,
    /// Article title.
    pub title: String,
    /// Article text without the title line.
    pub text: String,
}

fn attr<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let start = header.find(&format!("{key}=\""))? + key.len() + 2;
    let len = header[start..].find('"')?;
    Some(&header[start..start + len])
}

/// Parses WikiExtractor output: `<doc id=".." url=".." title="..">`, the
/// title line, the text, `</doc>`. `file` names the source in errors.
pub fn parse_wiki_docs(file: &Path, text: &str) -> Result<Vec<WikiDoc>> {
    let mut docs = Vec::new();
    let mut open: Option<(usize, WikiDoc, Vec<&str>)> = None;
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        if line.starts_with("<doc ") {
            if let Some((start, ..)) = open {
                return Err(DataError::format(
                    file,
                    format!("line {lineno}"),
                    format!("</doc> closing the document opened at line {start}"),
                ));
            }
            let header = || {
                DataError::format(
                    file,
                    format!("line {lineno}"),
                    format!("<doc id=\"<number>\" url=\"..\" title=\"..\">, found {line:?}"),
                )
            };
            let id = attr(line, "id")
                .and_then(|v| v.parse().ok())
                .ok_or_else(header)?;
            let title = attr(line, "title").ok_or_else(header)?.to_string();
            let doc = WikiDoc {
                id,
                title,
                text: String::new(),
            };
            open = Some((lineno, doc, Vec::new()));
        } else if line == "</doc>" {
            let (_, mut doc, lines) = open.take().ok_or_else(|| {
                DataError::format(file, format!("line {lineno}"), "<doc ...> before </doc>")
            })?;
            // WikiExtractor repeats the title as the first line of the body.
            let skip = usize::from(lines.first() == Some(&doc.title.as_str()));
            doc.text = lines[skip..].join("\n").trim().to_string();
            docs.push(doc);
        } else if let Some((_, _, lines)) = open.as_mut() {
            lines.push(line);
        } else if !line.trim().is_empty() {
            return Err(DataError::format(
                file,
                format!("line {lineno}"),
                "text inside a <doc> record",
            ));
        }
    }
    if let Some((start, ..)) = open {
        return Err(DataError::format(
            file,
            format!("line {start}"),
            "</doc> before the end of the file (record is truncated)",
        ));
    }
    Ok(docs)
}

/// The split of a Wikipedia slice file: `wiki_98` is valid, `wiki_99` test,
/// the rest train (documents are kept whole by splitting by file).
pub fn wikipedia_split(file_name: &str) -> Split {
    match file_name {
        "wiki_98" => Split::Valid,
        "wiki_99" => Split::Test,
        _ => Split::Train,
    }
}

/// The Wikipedia slice (Wiki-40B stand-in).
#[derive(Debug, Clone)]
pub struct Wikipedia {
    /// Articles of the split, in file order.
    pub docs: Vec<WikiDoc>,
}

impl Wikipedia {
    /// Loads a split from the prepared folder (`<data_dir>/wikipedia/wiki_XX`).
    pub fn load(data_dir: &Path, split: Split) -> Result<Self> {
        let dir = cache_dir(data_dir, DatasetName::Wikipedia);
        Self::from_dir(&dir, split)
    }

    /// Loads a split from a folder of WikiExtractor files (`wiki_00` ..).
    pub fn from_dir(dir: &Path, split: Split) -> Result<Self> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| DataError::io("list", dir, e))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("wiki_") && wikipedia_split(n) == split)
            .collect();
        names.sort();
        let mut docs = Vec::new();
        for name in names {
            let path = dir.join(&name);
            let bytes = std::fs::read(&path).map_err(|e| DataError::io("read", &path, e))?;
            docs.extend(parse_wiki_docs(&path, &utf8(bytes, &path, "whole file")?)?);
        }
        if docs.is_empty() {
            return Err(DataError::Empty {
                what: format!("{} split {split}", dir.display()),
                hint: "expected files wiki_00 .. wiki_99 holding <doc> records".into(),
            });
        }
        Ok(Self { docs })
    }
}

/// WikiText (`wiki.{valid,test}.tokens`): one paragraph or heading per line.
#[derive(Debug, Clone)]
pub struct Wikitext {
    /// Lines of the file, without their newline.
    pub lines: Vec<String>,
}

impl Wikitext {
    /// Reads a `.tokens` file.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| DataError::io("read", path, e))?;
        let text = utf8(bytes, path, "whole file")?;
        Ok(Self {
            lines: text.lines().map(str::to_string).collect(),
        })
    }

    /// Loads `wiki.<split>.tokens` of a prepared WikiText dataset.
    pub fn load(data_dir: &Path, name: DatasetName, split: Split) -> Result<Self> {
        let file = match split {
            Split::Test => "wiki.test.tokens",
            _ => "wiki.valid.tokens",
        };
        let path = cache_dir(data_dir, name).join(file);
        if !path.exists() {
            return Err(DataError::Missing {
                path,
                hint: format!("run `combiner data prepare {name} --from <archive>`"),
            });
        }
        Self::read(&path)
    }

    /// Word tokens with one `<eos>` per line (the standard WikiText count).
    pub fn token_count(&self) -> usize {
        self.lines
            .iter()
            .map(|l| l.split_whitespace().count() + 1)
            .sum()
    }
}

/// One IMDB review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    /// Review text (UTF-8, with the original `<br />` tags).
    pub text: String,
    /// 1 = positive, 0 = negative.
    pub label: u8,
}

/// Reads the IMDB archive (`aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt`)
/// into (train, test), each ordered by (id, label) so positives and negatives
/// alternate. Invalid UTF-8 is an error naming the member.
pub fn read_imdb_archive(
    path: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Vec<Review>, Vec<Review>)> {
    let mut train = Vec::new();
    let mut test = Vec::new();
    for_each_member(path, progress, |name, bytes| {
        let parts: Vec<&str> = name.trim_start_matches("./").split('/').collect();
        if let ["aclImdb", split, polarity, file] = parts.as_slice() {
            let label = match *polarity {
                "pos" => 1,
                "neg" => 0,
                _ => return Ok(Flow::Continue),
            };
            let Some(stem) = file.strip_suffix(".txt") else {
                return Ok(Flow::Continue);
            };
            let id: u32 = stem
                .split('_')
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    DataError::format(path, format!("member {name}"), "<id>_<rating>.txt")
                })?;
            let review = Review {
                text: utf8(bytes, path, name)?,
                label,
            };
            match *split {
                "train" => train.push((id, review)),
                "test" => test.push((id, review)),
                _ => {}
            }
        }
        Ok(Flow::Continue)
    })?;
    let order = |mut v: Vec<(u32, Review)>, split: &str| -> Result<Vec<Review>> {
        if v.is_empty() {
            return Err(DataError::Empty {
                what: format!("{} split {split}", path.display()),
                hint: format!("expected members aclImdb/{split}/{{pos,neg}}/<id>_<rating>.txt"),
            });
        }
        v.sort_by_key(|(id, r)| (*id, r.label));
        Ok(v.into_iter().map(|(_, r)| r).collect())
    };
    Ok((order(train, "train")?, order(test, "test")?))
}

/// IMDB reviews of one split (LRA Text).
#[derive(Debug, Clone)]
pub struct Imdb {
    /// Reviews in file order.
    pub reviews: Vec<Review>,
}

impl Imdb {
    /// Loads a split prepared by [`crate::prepare`] (`<data_dir>/imdb/{train,test}.jsonl`).
    pub fn load(data_dir: &Path, split: Split) -> Result<Self> {
        let name = if split == Split::Train {
            "train"
        } else {
            "test"
        };
        let path = cache_dir(data_dir, DatasetName::Imdb).join(format!("{name}.jsonl"));
        if !path.exists() {
            return Err(DataError::Missing {
                path,
                hint: "run `combiner data prepare imdb --from <imdb.tar.xz>`".into(),
            });
        }
        let mut reviews = Vec::new();
        for_each_json_line(&path, |line, value: Review| {
            if value.label > 1 {
                return Err(DataError::BadLabel {
                    file: path.clone(),
                    record: line,
                    label: value.label as i64,
                    classes: 2,
                });
            }
            reviews.push(value);
            Ok(())
        })?;
        Ok(Self { reviews })
    }
}

/// Opens `path`, gunzipping when its name ends in `.gz`.
fn open_maybe_gz(path: &Path) -> Result<Box<dyn BufRead>> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io("open", path, e))?;
    Ok(if path.extension().is_some_and(|e| e == "gz") {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    })
}

/// Calls `f(line_index, record)` for each non-blank JSON line of `path`
/// (optionally gzipped); line indices are 1-based, as editors count.
pub fn for_each_json_line<T: serde::de::DeserializeOwned>(
    path: &Path,
    mut f: impl FnMut(usize, T) -> Result<()>,
) -> Result<()> {
    let mut reader = open_maybe_gz(path)?;
    let mut buf = Vec::new();
    let mut lineno = 0;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| DataError::archive(path, format!("line {lineno}"), e))?;
        if n == 0 {
            return Ok(());
        }
        lineno += 1;
        let line = utf8(std::mem::take(&mut buf), path, &format!("line {lineno}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let value = serde_json::from_str(&line).map_err(|e| {
            DataError::format(
                path,
                format!("line {lineno}"),
                format!("a JSON record ({e})"),
            )
        })?;
        f(lineno, value)?;
    }
}

#[derive(Deserialize)]
struct TextField {
    text: String,
}

/// Reads the `text` field of every record of a C4-style JSON-lines file
/// (`.json`, `.jsonl`, or either gzipped).
pub fn read_jsonl_texts(path: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for_each_json_line(path, |_, r: TextField| {
        out.push(r.text);
        Ok(())
    })?;
    Ok(out)
}

/// Writes records as JSON lines.
pub fn write_jsonl<T: Serialize>(path: &Path, records: &[T]) -> Result<()> {
    let mut out = Vec::new();
    for r in records {
        serde_json::to_writer(&mut out, r).expect("serializing plain records cannot fail");
        out.push(b'\n');
    }
    std::fs::write(path, out).map_err(|e| DataError::io("write", path, e))
}

/// Reads any file to a `String`, naming it on invalid UTF-8.
pub fn read_text(path: &Path) -> Result<String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| DataError::io("read", path, e))?;
    utf8(bytes, path, "whole file")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil;
    use std::io::Write;

    const WIKI: &str = "<doc id=\"12\" url=\"http://en.wikipedia.org/wiki?curid=12\" title=\"Anarchism\">\nAnarchism\n\nAnarchism is a philosophy.\nSecond line.\n</doc>\n<doc id=\"25\" url=\"u\" title=\"Autism\">\nAutism\n</doc>\n";

    #[test]
    fn wiki_docs_parse_title_and_body() {
        let docs = parse_wiki_docs(Path::new("wiki_00"), WIKI).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!((docs[0].id, docs[0].title.as_str()), (12, "Anarchism"));
        assert_eq!(docs[0].text, "Anarchism is a philosophy.\nSecond line.");
        assert_eq!(docs[1].text, "");
    }

    #[test]
    fn truncated_or_malformed_wiki_records_name_file_and_line() {
        let cut = &WIKI[..WIKI.len() - 8];
        let err = parse_wiki_docs(Path::new("wiki_07"), cut)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("wiki_07") && err.contains("line 7") && err.contains("</doc>"),
            "{err}"
        );
        let err =
            parse_wiki_docs(Path::new("w"), "<doc id=\"x\" title=\"t\">\n</doc>\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn imdb_archive_labels_by_folder_and_rejects_bad_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imdb.tar.xz");
        let mut members = vec![
            ("aclImdb/README".to_string(), b"readme".to_vec()),
            ("aclImdb/test/neg/0_2.txt".to_string(), b"bad".to_vec()),
            (
                "aclImdb/test/pos/0_9.txt".to_string(),
                b"good<br />".to_vec(),
            ),
            ("aclImdb/train/neg/1_1.txt".to_string(), b"awful".to_vec()),
            (
                "aclImdb/train/pos/0_10.txt".to_string(),
                "très bien".as_bytes().to_vec(),
            ),
            (
                "aclImdb/train/urls_pos.txt".to_string(),
                b"http://x".to_vec(),
            ),
        ];
        testutil::write_tar_xz(&path, &members);
        let (train, test) = read_imdb_archive(&path, &mut |_, _| {}).unwrap();
        assert_eq!(
            train,
            vec![
                Review {
                    text: "très bien".into(),
                    label: 1
                },
                Review {
                    text: "awful".into(),
                    label: 0
                },
            ]
        );
        assert_eq!(test.iter().map(|r| r.label).collect::<Vec<_>>(), vec![0, 1]);

        members[3].1 = vec![b'o', b'k', 0xff, 0xfe];
        testutil::write_tar_xz(&path, &members);
        let err = read_imdb_archive(&path, &mut |_, _| {}).unwrap_err();
        assert!(
            matches!(err, DataError::InvalidUtf8 { offset: 2, .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("aclImdb/train/neg/1_1.txt"),
            "{err}"
        );
    }

    #[test]
    fn jsonl_reads_text_plain_and_gzipped_and_names_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let body = "{\"text\":\"a\",\"url\":\"u\"}\n\n{\"text\":\"b\\nc\"}\n";
        let plain = dir.path().join("c4.json");
        std::fs::write(&plain, body).unwrap();
        assert_eq!(read_jsonl_texts(&plain).unwrap(), vec!["a", "b\nc"]);

        let gz = dir.path().join("c4-train.00000-of-01024.json.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(body.as_bytes()).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        assert_eq!(read_jsonl_texts(&gz).unwrap(), vec!["a", "b\nc"]);

        std::fs::write(&plain, "{\"text\":\"a\"}\n{\"txt\":1}\n").unwrap();
        let err = read_jsonl_texts(&plain).unwrap_err().to_string();
        assert!(
            err.contains("c4.json") && err.contains("line 2") && err.contains("text"),
            "{err}"
        );
    }
}
