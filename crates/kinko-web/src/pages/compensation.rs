//! The compensation policy at a public address (`/compensation`), drawn from
//! `docs/COMPENSATION.md` itself (compiled in), so the page and the document cannot drift.
//! The page shows the document's title and version line and the section in the page's
//! language (`## 日本語` or `## English`); sections for operators are left out.
//!
//! The document uses a small part of Markdown — headings, `-` and `1.` lists, paragraphs,
//! continuation lines, `**strong**` and `*emphasis*` — and is read into blocks of plain text
//! spans, which the template escapes like any other text: nothing in the file becomes markup
//! the template did not write. A test fails when the document uses anything else.

use askama::Template;
use axum::Router;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;

use super::{Frame, Lang, render};
use crate::AppState;

const POLICY: &str = include_str!("../../../../docs/COMPENSATION.md");

pub fn router() -> Router<AppState> {
    Router::new().route("/compensation", get(compensation))
}

/// A run of text, strong or emphasised or neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub text: String,
    pub strong: bool,
    pub em: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    Heading(Vec<Span>),
    Paragraph(Vec<Span>),
    List {
        ordered: bool,
        items: Vec<Vec<Span>>,
    },
}

/// The document read into its title, its preface and its `##` sections (name, blocks).
#[derive(Debug, Default)]
pub struct Document {
    pub title: String,
    pub preface: Vec<Block>,
    pub sections: Vec<(String, Vec<Block>)>,
}

/// Joins a continuation line: a space between two Latin words, none between Japanese text.
fn join(text: &mut String, more: &str) {
    let latin = |c: Option<char>| c.is_some_and(|c| c.is_ascii());
    if !text.is_empty() && latin(text.chars().last()) && latin(more.chars().next()) {
        text.push(' ');
    }
    text.push_str(more);
}

/// `**strong**` and `*emphasis*` into spans.
pub fn spans(text: &str) -> Vec<Span> {
    let mut out = Vec::new();
    for (index, part) in text.split("**").enumerate() {
        let strong = index % 2 == 1;
        for (inner, piece) in part.split('*').enumerate() {
            if !piece.is_empty() {
                out.push(Span {
                    text: piece.to_owned(),
                    strong,
                    em: inner % 2 == 1,
                });
            }
        }
    }
    out
}

enum Open {
    None,
    Paragraph(String),
    List { ordered: bool, items: Vec<String> },
}

fn close(open: &mut Open, blocks: &mut Vec<Block>) {
    match std::mem::replace(open, Open::None) {
        Open::None => {}
        Open::Paragraph(text) => blocks.push(Block::Paragraph(spans(&text))),
        Open::List { ordered, items } => blocks.push(Block::List {
            ordered,
            items: items.iter().map(|item| spans(item)).collect(),
        }),
    }
}

/// `1. ` … `99. `: the rest of an ordered list item.
fn ordered_item(line: &str) -> Option<&str> {
    let (number, rest) = line.split_once(". ")?;
    (!number.is_empty() && number.len() <= 2 && number.chars().all(|c| c.is_ascii_digit()))
        .then_some(rest)
}

pub fn parse(markdown: &str) -> Document {
    let mut document = Document::default();
    let mut blocks = Vec::new();
    let mut section: Option<String> = None;
    let mut open = Open::None;
    let finish =
        |section: &Option<String>, blocks: Vec<Block>, document: &mut Document| match section {
            Some(name) => document.sections.push((name.clone(), blocks)),
            None => document.preface = blocks,
        };
    for line in markdown.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            close(&mut open, &mut blocks);
        } else if let Some(title) = line.strip_prefix("# ") {
            close(&mut open, &mut blocks);
            document.title = title.trim().to_owned();
        } else if let Some(name) = line.strip_prefix("## ") {
            close(&mut open, &mut blocks);
            finish(&section, std::mem::take(&mut blocks), &mut document);
            section = Some(name.trim().to_owned());
        } else if let Some(heading) = line.strip_prefix("### ") {
            close(&mut open, &mut blocks);
            blocks.push(Block::Heading(spans(heading.trim())));
        } else if let Some(item) = line.strip_prefix("- ") {
            if !matches!(open, Open::List { ordered: false, .. }) {
                close(&mut open, &mut blocks);
                open = Open::List {
                    ordered: false,
                    items: Vec::new(),
                };
            }
            if let Open::List { items, .. } = &mut open {
                items.push(item.trim().to_owned());
            }
        } else if let Some(item) = ordered_item(line) {
            if !matches!(open, Open::List { ordered: true, .. }) {
                close(&mut open, &mut blocks);
                open = Open::List {
                    ordered: true,
                    items: Vec::new(),
                };
            }
            if let Open::List { items, .. } = &mut open {
                items.push(item.trim().to_owned());
            }
        } else {
            match &mut open {
                Open::List { items, .. } if line.starts_with(' ') => {
                    if let Some(last) = items.last_mut() {
                        join(last, trimmed);
                    }
                }
                Open::Paragraph(text) => join(text, trimmed),
                _ => {
                    close(&mut open, &mut blocks);
                    open = Open::Paragraph(trimmed.to_owned());
                }
            }
        }
    }
    close(&mut open, &mut blocks);
    finish(&section, blocks, &mut document);
    document
}

#[derive(Template)]
#[template(path = "compensation.html")]
struct CompensationPage {
    page: Frame,
    title: String,
    preface: Vec<Block>,
    blocks: Vec<Block>,
}

/// The policy in the page's language; public, no session needed.
async fn compensation(lang: Lang) -> Response {
    let document = parse(POLICY);
    let wanted = match lang {
        Lang::Ja => "日本語",
        Lang::En => "English",
    };
    let blocks = document
        .sections
        .into_iter()
        .find(|(name, _)| name == wanted)
        .map(|(_, blocks)| blocks)
        .unwrap_or_default();
    render(
        StatusCode::OK,
        &CompensationPage {
            page: Frame::new(lang, "", false, "/compensation"),
            title: document.title,
            preface: document.preface,
            blocks,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(blocks: &[Block]) -> String {
        let mut text = String::new();
        for block in blocks {
            let lines: Vec<&Vec<Span>> = match block {
                Block::Heading(spans) | Block::Paragraph(spans) => vec![spans],
                Block::List { items, .. } => items.iter().collect(),
            };
            for spans in lines {
                for span in spans {
                    text.push_str(&span.text);
                }
                text.push('\n');
            }
        }
        text
    }

    /// The shipped policy reads into both languages' sections, with every heading, and no
    /// Markdown left over in the text (the document stays within what the page draws).
    #[test]
    fn the_shipped_policy_reads_into_both_languages() {
        let document = parse(POLICY);
        assert_eq!(document.title, "補償方針 / Compensation policy");
        for (name, headings) in [("日本語", 5), ("English", 5)] {
            let (_, blocks) = document
                .sections
                .iter()
                .find(|(section, _)| section == name)
                .unwrap_or_else(|| panic!("no {name} section"));
            let count = blocks
                .iter()
                .filter(|block| matches!(block, Block::Heading(_)))
                .count();
            assert_eq!(count, headings, "{name}");
            let text = text_of(blocks);
            for markup in ["**", "# ", "\n- ", "`", "]("] {
                assert!(!text.contains(markup), "{name} keeps {markup:?}:\n{text}");
            }
        }
        let english = text_of(&document.sections[1].1);
        assert!(english.contains("Within 14 days of the claim, the loss is refunded to the bank account it was taken from"), "{english}");
        let japanese = text_of(&document.sections[0].1);
        assert!(japanese.contains("申し出から 14 日以内に、被害額を、引き落とされた銀行口座へ返金します。回収できた資金から先に"), "{japanese}");
    }

    #[test]
    fn inline_markup_becomes_spans_and_nothing_else() {
        assert_eq!(
            spans("a **b** *c* <script>"),
            vec![
                Span {
                    text: "a ".into(),
                    strong: false,
                    em: false
                },
                Span {
                    text: "b".into(),
                    strong: true,
                    em: false
                },
                Span {
                    text: " ".into(),
                    strong: false,
                    em: false
                },
                Span {
                    text: "c".into(),
                    strong: false,
                    em: true
                },
                Span {
                    text: " <script>".into(),
                    strong: false,
                    em: false
                },
            ]
        );
    }
}
