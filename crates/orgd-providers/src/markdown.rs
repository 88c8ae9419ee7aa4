//! Markdown descriptions parsed once and rendered for each tracker.
//!
//! Ticket descriptions and pull-request comments are written in Markdown. GitHub, GitLab and
//! Bitbucket take that Markdown as it is, but Jira wants an Atlassian Document Format (ADF) tree
//! and Azure DevOps wants HTML. Rather than translating Markdown text twice, the text is parsed
//! once by `pulldown-cmark` into a deliberately small tree ([`Document`]) that holds only what
//! both targets can show: headings, paragraphs with bold/italic/inline code/links, bullet and
//! ordered lists, and code blocks. Everything else (tables, block quotes, images, raw HTML,
//! footnotes, rules…) keeps its text as plain paragraphs, so nothing a user wrote is dropped
//! silently and nothing they wrote is passed through as markup.

use pulldown_cmark::{CodeBlockKind, Event, LinkType, Options, Parser, Tag, TagEnd};
use serde_json::{Value, json};

/// A Markdown text reduced to the constructs every tracker can render.
///
/// Built by [`parse`]; rendered by [`Document::to_adf`] (Jira) and [`Document::to_html`]
/// (Azure DevOps). The tree never holds an empty text or a paragraph without visible text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    blocks: Vec<Block>,
}

/// A block of the intermediate tree.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Block {
    Heading {
        level: u8,
        inlines: Vec<Inline>,
    },
    Paragraph {
        inlines: Vec<Inline>,
    },
    BulletList {
        items: Vec<Vec<Block>>,
    },
    OrderedList {
        start: u64,
        items: Vec<Vec<Block>>,
    },
    Code {
        language: Option<String>,
        text: String,
    },
}

/// An inline element of a heading or paragraph.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Inline {
    /// A run of text; never empty.
    Text {
        text: String,
        style: Style,
    },
    HardBreak,
}

/// How a run of text is shown. `link` only ever holds an `http:`, `https:` or `mailto:` URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Style {
    bold: bool,
    italic: bool,
    code: bool,
    link: Option<String>,
}

/// Parses `markdown` (CommonMark plus GitHub's tables, strikethrough, task lists and
/// footnotes, so that those degrade to readable text instead of stray `|` and `[^1]`).
pub fn parse(markdown: &str) -> Document {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES;
    let mut builder = Builder::default();
    for event in Parser::new_ext(markdown, options) {
        builder.event(event);
    }
    builder.finish()
}

/// A list being built: its start number (`None` for bullets) and its items so far; the last
/// item is the one receiving blocks.
struct ListFrame {
    start: Option<u64>,
    items: Vec<Vec<Block>>,
}

/// A heading (`Some(level)`) or paragraph (`None`) whose inlines are being collected.
struct OpenInline {
    heading: Option<u8>,
    inlines: Vec<Inline>,
}

/// A code block whose text is being collected.
struct OpenCode {
    language: Option<String>,
    text: String,
}

/// A link being read: its target if safe to render, the raw URL (shown as text when the link
/// has none), and how many texts had been pushed when it opened.
struct OpenLink {
    href: Option<String>,
    url: String,
    pushes_at_start: usize,
}

/// Turns the flat event stream of `pulldown-cmark` into the [`Block`] tree.
#[derive(Default)]
struct Builder {
    root: Vec<Block>,
    lists: Vec<ListFrame>,
    inline: Option<OpenInline>,
    code: Option<OpenCode>,
    strong: usize,
    emphasis: usize,
    links: Vec<OpenLink>,
    /// Text waiting to start the next paragraph (a task marker or a footnote label).
    prefix: Option<String>,
    /// Number of texts pushed so far, to notice links without text.
    text_pushes: usize,
}

impl Builder {
    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(text) => self.text(&text),
            Event::Code(text) => self.push_text(&text, true),
            Event::Html(text) => self.html_line(&text),
            Event::InlineHtml(text) | Event::InlineMath(text) | Event::DisplayMath(text) => {
                self.push_text(&text, false);
            }
            Event::FootnoteReference(label) => self.push_text(&format!("[^{label}]"), false),
            Event::SoftBreak => self.push_text(" ", false),
            Event::HardBreak => self.push_inline(Inline::HardBreak),
            Event::Rule => {
                self.open_inline(None);
                self.push_text("---", false);
                self.close_inline();
            }
            Event::TaskListMarker(done) => self.add_prefix(if done { "[x] " } else { "[ ] " }),
        }
    }

    fn start(&mut self, tag: Tag<'_>) {
        match tag {
            Tag::Paragraph
            | Tag::HtmlBlock
            | Tag::TableHead
            | Tag::TableRow
            | Tag::DefinitionListTitle => self.open_inline(None),
            Tag::Heading { level, .. } => self.open_inline(Some(level as u8)),
            Tag::CodeBlock(kind) => {
                self.close_inline();
                self.code = Some(OpenCode {
                    language: code_language(&kind),
                    text: String::new(),
                });
            }
            Tag::List(start) => {
                self.close_inline();
                self.lists.push(ListFrame {
                    start,
                    items: Vec::new(),
                });
            }
            Tag::Item => {
                self.close_inline();
                if let Some(list) = self.lists.last_mut() {
                    list.items.push(Vec::new());
                }
            }
            Tag::TableCell => self.separate_cell(),
            Tag::FootnoteDefinition(label) => {
                self.close_inline();
                self.add_prefix(&format!("[^{label}]: "));
            }
            Tag::Emphasis => self.emphasis += 1,
            Tag::Strong => self.strong += 1,
            Tag::Link {
                link_type,
                dest_url,
                ..
            } => self.open_link(link_type, &dest_url),
            Tag::BlockQuote(_)
            | Tag::Table(_)
            | Tag::DefinitionList
            | Tag::DefinitionListDefinition
            | Tag::MetadataBlock(_) => self.close_inline(),
            Tag::Image { .. } | Tag::Strikethrough | Tag::Superscript | Tag::Subscript => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::CodeBlock => self.close_code(),
            TagEnd::List(_) => self.close_list(),
            TagEnd::Item | TagEnd::FootnoteDefinition => {
                self.flush_prefix();
                self.close_inline();
            }
            TagEnd::Emphasis => self.emphasis = self.emphasis.saturating_sub(1),
            TagEnd::Strong => self.strong = self.strong.saturating_sub(1),
            TagEnd::Link => self.close_link(),
            TagEnd::Paragraph
            | TagEnd::Heading(_)
            | TagEnd::HtmlBlock
            | TagEnd::TableHead
            | TagEnd::TableRow
            | TagEnd::DefinitionListTitle
            | TagEnd::BlockQuote(_)
            | TagEnd::Table
            | TagEnd::DefinitionList
            | TagEnd::DefinitionListDefinition
            | TagEnd::MetadataBlock(_) => self.close_inline(),
            TagEnd::TableCell
            | TagEnd::Image
            | TagEnd::Strikethrough
            | TagEnd::Superscript
            | TagEnd::Subscript => {}
        }
    }

    /// Text goes to the open code block, if any, else to the current paragraph.
    fn text(&mut self, text: &str) {
        match &mut self.code {
            Some(code) => code.text.push_str(text),
            None => self.push_text(text, false),
        }
    }

    /// A line of a raw HTML block, kept as plain text on its own line.
    fn html_line(&mut self, line: &str) {
        if self
            .inline
            .as_ref()
            .is_some_and(|open| !open.inlines.is_empty())
        {
            self.push_inline(Inline::HardBreak);
        }
        self.push_text(line.trim_end_matches(['\r', '\n']), false);
    }

    /// Table cells are joined with ` | ` so a row reads as one line.
    fn separate_cell(&mut self) {
        if self
            .inline
            .as_ref()
            .is_some_and(|open| !open.inlines.is_empty())
        {
            self.push_text(" | ", false);
        }
    }

    fn open_link(&mut self, link_type: LinkType, dest_url: &str) {
        let url = if link_type == LinkType::Email && !dest_url.starts_with("mailto:") {
            format!("mailto:{dest_url}")
        } else {
            dest_url.to_owned()
        };
        self.links.push(OpenLink {
            href: safe_href(&url),
            pushes_at_start: self.text_pushes,
            url,
        });
    }

    /// A link without text (`[](https://…)`) shows its URL, so it is not lost.
    fn close_link(&mut self) {
        if let Some(link) = self.links.last()
            && link.pushes_at_start == self.text_pushes
        {
            let url = link.url.clone();
            self.push_text(&url, false);
        }
        self.links.pop();
    }

    fn add_prefix(&mut self, prefix: &str) {
        if self.inline.is_some() {
            self.push_text(prefix, false);
        } else {
            self.prefix = Some(prefix.to_owned());
        }
    }

    /// A prefix that never met its paragraph (an empty task or footnote) becomes one.
    fn flush_prefix(&mut self) {
        if self.prefix.is_some() {
            self.open_inline(None);
            self.close_inline();
        }
    }

    fn open_inline(&mut self, heading: Option<u8>) {
        self.close_inline();
        self.inline = Some(OpenInline {
            heading,
            inlines: Vec::new(),
        });
        if let Some(prefix) = self.prefix.take() {
            self.push_text(&prefix, false);
        }
    }

    fn push_inline(&mut self, inline: Inline) {
        if self.inline.is_none() {
            self.open_inline(None);
        }
        if let Some(open) = &mut self.inline {
            open.inlines.push(inline);
        }
    }

    /// Appends text in the current style, merging it into the previous run when the style is
    /// the same, so `pulldown-cmark`'s split texts come out as one node.
    fn push_text(&mut self, text: &str, code: bool) {
        if text.is_empty() {
            return;
        }
        if self.inline.is_none() {
            self.open_inline(None);
        }
        self.text_pushes += 1;
        let style = Style {
            bold: self.strong > 0,
            italic: self.emphasis > 0,
            code,
            link: self.links.last().and_then(|link| link.href.clone()),
        };
        if let Some(OpenInline { inlines, .. }) = &mut self.inline
            && let Some(Inline::Text {
                text: last,
                style: last_style,
            }) = inlines.last_mut()
            && *last_style == style
        {
            last.push_str(text);
            return;
        }
        self.push_inline(Inline::Text {
            text: text.to_owned(),
            style,
        });
    }

    /// Ends the open heading or paragraph; one without visible text is dropped.
    fn close_inline(&mut self) {
        let Some(OpenInline { heading, inlines }) = self.inline.take() else {
            return;
        };
        let inlines = trim_breaks(inlines);
        if !has_visible_text(&inlines) {
            return;
        }
        self.push_block(match heading {
            Some(level) => Block::Heading { level, inlines },
            None => Block::Paragraph { inlines },
        });
    }

    fn close_code(&mut self) {
        if let Some(OpenCode { language, text }) = self.code.take() {
            let text = text.trim_end_matches(['\r', '\n']).to_owned();
            self.push_block(Block::Code { language, text });
        }
    }

    fn close_list(&mut self) {
        self.close_inline();
        if let Some(ListFrame { start, items }) = self.lists.pop() {
            self.push_block(match start {
                Some(start) => Block::OrderedList { start, items },
                None => Block::BulletList { items },
            });
        }
    }

    /// Adds a finished block to the innermost open list item, or to the document.
    fn push_block(&mut self, block: Block) {
        match self.lists.last_mut().and_then(|list| list.items.last_mut()) {
            Some(item) => item.push(block),
            None => self.root.push(block),
        }
    }

    /// `pulldown-cmark` balances every start with an end, so only a stray paragraph can
    /// still be open here.
    fn finish(mut self) -> Document {
        self.close_inline();
        Document { blocks: self.root }
    }
}

/// The first word of a fence's info string (`rust,ignore` stays whole), if any.
fn code_language(kind: &CodeBlockKind<'_>) -> Option<String> {
    match kind {
        CodeBlockKind::Fenced(info) => info.split_whitespace().next().map(str::to_owned),
        CodeBlockKind::Indented => None,
    }
}

/// Only web and mail links are rendered as links: `javascript:`, `data:`, relative and other
/// targets would be unsafe or meaningless in a tracker, so they stay plain text.
fn safe_href(url: &str) -> Option<String> {
    let url = url.trim();
    let (scheme, _) = url.split_once(':')?;
    let allowed = ["http", "https", "mailto"]
        .iter()
        .any(|allowed| scheme.eq_ignore_ascii_case(allowed));
    allowed.then(|| url.to_owned())
}

/// Drops hard breaks at the start and end of a block, where they only add blank lines.
fn trim_breaks(mut inlines: Vec<Inline>) -> Vec<Inline> {
    while inlines.last() == Some(&Inline::HardBreak) {
        inlines.pop();
    }
    let leading = inlines
        .iter()
        .take_while(|inline| **inline == Inline::HardBreak)
        .count();
    inlines.drain(..leading);
    inlines
}

fn has_visible_text(inlines: &[Inline]) -> bool {
    inlines.iter().any(|inline| match inline {
        Inline::Text { text, .. } => !text.trim().is_empty(),
        Inline::HardBreak => false,
    })
}

impl Document {
    /// Renders the document as a Jira ADF `doc` node, built as a JSON tree.
    ///
    /// ADF's schema forbids empty text nodes, marks inside code blocks and `code` combined with
    /// any mark but `link`, and requires a list item to start with a paragraph or code block;
    /// the rendering respects all of these so Jira never answers 400 for our formatting.
    pub fn to_adf(&self) -> Value {
        json!({"type": "doc", "version": 1, "content": adf_blocks(&self.blocks)})
    }

    /// Renders the document as the HTML Azure DevOps rich-text fields take.
    ///
    /// Only `h1`–`h6`, `p`, `strong`, `em`, `code`, `a`, `ul`, `ol`, `li`, `pre` and `br` are
    /// produced; every text and attribute is escaped, and raw HTML from the input only ever
    /// appears as escaped text.
    pub fn to_html(&self) -> String {
        let mut out = String::new();
        html_blocks(&self.blocks, &mut out);
        out
    }
}

fn adf_blocks(blocks: &[Block]) -> Vec<Value> {
    blocks.iter().map(adf_block).collect()
}

fn adf_block(block: &Block) -> Value {
    match block {
        Block::Heading { level, inlines } => json!({
            "type": "heading",
            "attrs": {"level": level},
            "content": adf_inlines(inlines),
        }),
        Block::Paragraph { inlines } => adf_paragraph(inlines),
        Block::BulletList { items } => json!({"type": "bulletList", "content": adf_items(items)}),
        Block::OrderedList { start, items } if *start == 1 => {
            json!({"type": "orderedList", "content": adf_items(items)})
        }
        Block::OrderedList { start, items } => json!({
            "type": "orderedList",
            "attrs": {"order": start},
            "content": adf_items(items),
        }),
        Block::Code { language, text } => adf_code_block(language.as_deref(), text),
    }
}

fn adf_paragraph(inlines: &[Inline]) -> Value {
    json!({"type": "paragraph", "content": adf_inlines(inlines)})
}

/// One unmarked text node keeps the code's line breaks; empty code has no `content` at all.
fn adf_code_block(language: Option<&str>, text: &str) -> Value {
    let attrs = json!({"language": language.unwrap_or("text")});
    if text.is_empty() {
        json!({"type": "codeBlock", "attrs": attrs})
    } else {
        json!({"type": "codeBlock", "attrs": attrs, "content": [{"type": "text", "text": text}]})
    }
}

fn adf_items(items: &[Vec<Block>]) -> Vec<Value> {
    items.iter().map(|item| adf_list_item(item)).collect()
}

/// ADF list items hold no headings (they become paragraphs) and must start with a paragraph or
/// code block (an empty paragraph is put first when they would not).
fn adf_list_item(blocks: &[Block]) -> Value {
    let mut content: Vec<Value> = blocks
        .iter()
        .map(|block| match block {
            Block::Heading { inlines, .. } => adf_paragraph(inlines),
            other => adf_block(other),
        })
        .collect();
    let starts_well = matches!(
        blocks.first(),
        Some(Block::Paragraph { .. } | Block::Heading { .. } | Block::Code { .. })
    );
    if !starts_well {
        content.insert(0, adf_paragraph(&[]));
    }
    json!({"type": "listItem", "content": content})
}

fn adf_inlines(inlines: &[Inline]) -> Vec<Value> {
    inlines
        .iter()
        .filter_map(|inline| match inline {
            Inline::Text { text, .. } if text.is_empty() => None,
            Inline::Text { text, style } => Some(adf_text(text, style)),
            Inline::HardBreak => Some(json!({"type": "hardBreak"})),
        })
        .collect()
}

fn adf_text(text: &str, style: &Style) -> Value {
    let marks = adf_marks(style);
    if marks.is_empty() {
        json!({"type": "text", "text": text})
    } else {
        json!({"type": "text", "text": text, "marks": marks})
    }
}

/// `code` may only be combined with `link` in ADF, so bold and italic are dropped on code.
fn adf_marks(style: &Style) -> Vec<Value> {
    let mut marks = Vec::new();
    if style.code {
        marks.push(json!({"type": "code"}));
    } else {
        if style.bold {
            marks.push(json!({"type": "strong"}));
        }
        if style.italic {
            marks.push(json!({"type": "em"}));
        }
    }
    if let Some(href) = &style.link {
        marks.push(json!({"type": "link", "attrs": {"href": href}}));
    }
    marks
}

fn html_blocks(blocks: &[Block], out: &mut String) {
    for block in blocks {
        html_block(block, out);
    }
}

fn html_block(block: &Block, out: &mut String) {
    match block {
        Block::Heading { level, inlines } => {
            out.push_str(&format!("<h{level}>"));
            html_inlines(inlines, out);
            out.push_str(&format!("</h{level}>"));
        }
        Block::Paragraph { inlines } => {
            out.push_str("<p>");
            html_inlines(inlines, out);
            out.push_str("</p>");
        }
        Block::BulletList { items } => html_list("<ul>", items, "</ul>", out),
        Block::OrderedList { start: 1, items } => html_list("<ol>", items, "</ol>", out),
        Block::OrderedList { start, items } => {
            html_list(&format!("<ol start=\"{start}\">"), items, "</ol>", out);
        }
        Block::Code { text, .. } => {
            out.push_str("<pre><code>");
            escape_html(text, out);
            out.push_str("</code></pre>");
        }
    }
}

fn html_list(open: &str, items: &[Vec<Block>], close: &str, out: &mut String) {
    out.push_str(open);
    for item in items {
        out.push_str("<li>");
        html_blocks(item, out);
        out.push_str("</li>");
    }
    out.push_str(close);
}

fn html_inlines(inlines: &[Inline], out: &mut String) {
    for inline in inlines {
        match inline {
            Inline::Text { text, style } => html_text(text, style, out),
            Inline::HardBreak => out.push_str("<br>"),
        }
    }
}

fn html_text(text: &str, style: &Style, out: &mut String) {
    if let Some(href) = &style.link {
        out.push_str("<a href=\"");
        escape_html(href, out);
        out.push_str("\">");
    }
    let tags = [
        (style.bold, "strong"),
        (style.italic, "em"),
        (style.code, "code"),
    ];
    for (_, tag) in tags.iter().filter(|(on, _)| *on) {
        out.push_str(&format!("<{tag}>"));
    }
    escape_html(text, out);
    for (_, tag) in tags.iter().rev().filter(|(on, _)| *on) {
        out.push_str(&format!("</{tag}>"));
    }
    if style.link.is_some() {
        out.push_str("</a>");
    }
}

/// Escapes the five characters that are special in HTML text and quoted attributes.
fn escape_html(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks an ADF tree and fails on anything Jira's schema would refuse that this module
    /// could produce: empty or non-string texts, marks in code blocks, `code` with a mark other
    /// than `link`, list items that are empty or start with a list, unknown node types.
    fn assert_valid_adf(node: &Value, input: &str) {
        let kind = node["type"].as_str().unwrap_or_default();
        let known = [
            "doc",
            "heading",
            "paragraph",
            "bulletList",
            "orderedList",
            "listItem",
            "codeBlock",
            "text",
            "hardBreak",
        ];
        assert!(known.contains(&kind), "unknown node {node} for {input:?}");
        if kind == "text" {
            let text = node["text"].as_str().unwrap_or_default();
            assert!(!text.is_empty(), "empty text node for {input:?}");
            if let Some(marks) = node["marks"].as_array() {
                assert!(!marks.is_empty(), "empty marks for {input:?}");
                let types: Vec<&str> = marks.iter().filter_map(|m| m["type"].as_str()).collect();
                if types.contains(&"code") {
                    assert!(
                        types.iter().all(|t| *t == "code" || *t == "link"),
                        "code combined with {types:?} for {input:?}"
                    );
                }
            }
        }
        if kind == "codeBlock"
            && let Some(content) = node["content"].as_array()
        {
            assert_eq!(content.len(), 1, "code block for {input:?}");
            assert!(content[0]["marks"].is_null(), "marks in code for {input:?}");
        }
        if kind == "listItem" {
            let first = node["content"][0]["type"].as_str().unwrap_or_default();
            assert!(
                first == "paragraph" || first == "codeBlock",
                "list item starts with {first:?} for {input:?}"
            );
        }
        if kind == "bulletList" || kind == "orderedList" {
            let items = node["content"].as_array().map(Vec::len).unwrap_or_default();
            assert!(items > 0, "empty list for {input:?}");
        }
        if let Some(children) = node["content"].as_array() {
            for child in children {
                assert_valid_adf(child, input);
            }
        }
    }

    fn adf(markdown: &str) -> Value {
        parse(markdown).to_adf()
    }

    fn html(markdown: &str) -> String {
        parse(markdown).to_html()
    }

    fn doc(content: Value) -> Value {
        json!({"type": "doc", "version": 1, "content": content})
    }

    #[test]
    fn reference_example_matches_exactly() {
        let markdown = "## Failure\n\nRun 1234 failed.\n\n```\nAssertionError: expected 200\n  at checkout.spec.ts:42\n```\n";
        let expected = doc(json!([
            {"type":"heading","attrs":{"level":2},"content":[{"type":"text","text":"Failure"}]},
            {"type":"paragraph","content":[{"type":"text","text":"Run 1234 failed."}]},
            {"type":"codeBlock","attrs":{"language":"text"},"content":[{"type":"text","text":"AssertionError: expected 200\n  at checkout.spec.ts:42"}]}
        ]));
        assert_eq!(adf(markdown), expected);
        assert_eq!(
            html(markdown),
            "<h2>Failure</h2><p>Run 1234 failed.</p><pre><code>AssertionError: expected 200\n  at checkout.spec.ts:42</code></pre>"
        );
    }

    #[test]
    fn headings_of_every_level() {
        for level in 1..=6u8 {
            let markdown = format!("{} Title", "#".repeat(usize::from(level)));
            let expected = doc(json!([
                {"type":"heading","attrs":{"level":level},"content":[{"type":"text","text":"Title"}]}
            ]));
            assert_eq!(adf(&markdown), expected);
            assert_eq!(html(&markdown), format!("<h{level}>Title</h{level}>"));
        }
    }

    #[test]
    fn inline_marks() {
        let markdown = "a **b** *c* `d` [e](https://x.test/?a=1&b=2) ***f***";
        let expected = doc(json!([{"type":"paragraph","content":[
            {"type":"text","text":"a "},
            {"type":"text","text":"b","marks":[{"type":"strong"}]},
            {"type":"text","text":" "},
            {"type":"text","text":"c","marks":[{"type":"em"}]},
            {"type":"text","text":" "},
            {"type":"text","text":"d","marks":[{"type":"code"}]},
            {"type":"text","text":" "},
            {"type":"text","text":"e","marks":[{"type":"link","attrs":{"href":"https://x.test/?a=1&b=2"}}]},
            {"type":"text","text":" "},
            {"type":"text","text":"f","marks":[{"type":"strong"},{"type":"em"}]}
        ]}]));
        assert_eq!(adf(markdown), expected);
        assert_eq!(
            html(markdown),
            "<p>a <strong>b</strong> <em>c</em> <code>d</code> \
             <a href=\"https://x.test/?a=1&amp;b=2\">e</a> <strong><em>f</em></strong></p>"
        );
    }

    #[test]
    fn code_inside_bold_link_keeps_only_code_and_link_in_adf() {
        let markdown = "[**`x`**](https://x.test)";
        let expected = doc(json!([{"type":"paragraph","content":[
            {"type":"text","text":"x","marks":[{"type":"code"},{"type":"link","attrs":{"href":"https://x.test"}}]}
        ]}]));
        assert_eq!(adf(markdown), expected);
        assert_eq!(
            html(markdown),
            "<p><a href=\"https://x.test\"><strong><code>x</code></strong></a></p>"
        );
    }

    #[test]
    fn soft_break_is_a_space_and_hard_break_is_kept() {
        let expected = doc(json!([{"type":"paragraph","content":[
            {"type":"text","text":"one two"},
            {"type":"hardBreak"},
            {"type":"text","text":"three"}
        ]}]));
        assert_eq!(adf("one\ntwo\\\nthree"), expected);
        assert_eq!(html("one\ntwo  \nthree"), "<p>one two<br>three</p>");
    }

    #[test]
    fn bullet_and_ordered_lists() {
        let markdown = "- a\n- **b**\n\n3. x\n4. y\n";
        let expected = doc(json!([
            {"type":"bulletList","content":[
                {"type":"listItem","content":[{"type":"paragraph","content":[{"type":"text","text":"a"}]}]},
                {"type":"listItem","content":[{"type":"paragraph","content":[{"type":"text","text":"b","marks":[{"type":"strong"}]}]}]}
            ]},
            {"type":"orderedList","attrs":{"order":3},"content":[
                {"type":"listItem","content":[{"type":"paragraph","content":[{"type":"text","text":"x"}]}]},
                {"type":"listItem","content":[{"type":"paragraph","content":[{"type":"text","text":"y"}]}]}
            ]}
        ]));
        assert_eq!(adf(markdown), expected);
        assert_eq!(
            html(markdown),
            "<ul><li><p>a</p></li><li><p><strong>b</strong></p></li></ul>\
             <ol start=\"3\"><li><p>x</p></li><li><p>y</p></li></ol>"
        );
    }

    #[test]
    fn ordered_list_starting_at_one_has_no_order() {
        let value = adf("1. x\n");
        assert!(value["content"][0]["attrs"].is_null());
        assert_eq!(value["content"][0]["type"], "orderedList");
        assert_eq!(html("1. x\n"), "<ol><li><p>x</p></li></ol>");
    }

    #[test]
    fn nested_and_loose_lists() {
        let markdown = "- a\n\n  more\n  - b\n    ```sh\n    ls\n    ```\n";
        let expected = doc(
            json!([{"type":"bulletList","content":[{"type":"listItem","content":[
                {"type":"paragraph","content":[{"type":"text","text":"a"}]},
                {"type":"paragraph","content":[{"type":"text","text":"more"}]},
                {"type":"bulletList","content":[{"type":"listItem","content":[
                    {"type":"paragraph","content":[{"type":"text","text":"b"}]},
                    {"type":"codeBlock","attrs":{"language":"sh"},"content":[{"type":"text","text":"ls"}]}
                ]}]}
            ]}]}]),
        );
        assert_eq!(adf(markdown), expected);
    }

    #[test]
    fn list_item_starting_with_a_list_or_heading_stays_valid_adf() {
        let value = adf("- - inner\n- # Title\n");
        let items = &value["content"][0]["content"];
        assert_eq!(
            items[0]["content"][0],
            json!({"type":"paragraph","content":[]})
        );
        assert_eq!(items[0]["content"][1]["type"], "bulletList");
        assert_eq!(
            items[1]["content"][0],
            json!({"type":"paragraph","content":[{"type":"text","text":"Title"}]})
        );
        assert_eq!(
            html("- # Title\n"),
            "<ul><li><h1>Title</h1></li></ul>",
            "HTML allows headings in items"
        );
    }

    #[test]
    fn code_fences() {
        let expected = doc(json!([
            {"type":"codeBlock","attrs":{"language":"rust"},"content":[{"type":"text","text":"fn main() {}\n\n// end"}]}
        ]));
        assert_eq!(
            adf("```rust title=x\nfn main() {}\n\n// end\n```\n"),
            expected
        );
        assert_eq!(
            adf("```\n```\n"),
            doc(json!([{"type":"codeBlock","attrs":{"language":"text"}}]))
        );
        assert_eq!(
            adf("    indented <b>\n"),
            doc(
                json!([{"type":"codeBlock","attrs":{"language":"text"},"content":[{"type":"text","text":"indented <b>"}]}])
            )
        );
        assert_eq!(
            html("```html\n<b>&\"'</b>\n```"),
            "<pre><code>&lt;b&gt;&amp;&quot;&#39;&lt;/b&gt;</code></pre>"
        );
    }

    #[test]
    fn raw_html_is_escaped_text() {
        let markdown = "<script>alert('x')</script>\n\nhi <b onclick=\"x()\">there</b>";
        assert_eq!(
            html(markdown),
            "<p>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;</p>\
             <p>hi &lt;b onclick=&quot;x()&quot;&gt;there&lt;/b&gt;</p>"
        );
        let expected = doc(json!([
            {"type":"paragraph","content":[{"type":"text","text":"<script>alert('x')</script>"}]},
            {"type":"paragraph","content":[{"type":"text","text":"hi <b onclick=\"x()\">there</b>"}]}
        ]));
        assert_eq!(adf(markdown), expected);
    }

    #[test]
    fn multi_line_html_block_keeps_its_lines() {
        let expected = doc(json!([{"type":"paragraph","content":[
            {"type":"text","text":"<div>"},
            {"type":"hardBreak"},
            {"type":"text","text":"x"},
            {"type":"hardBreak"},
            {"type":"text","text":"</div>"}
        ]}]));
        assert_eq!(adf("<div>\nx\n</div>\n"), expected);
    }

    #[test]
    fn unsafe_links_are_plain_text() {
        for markdown in [
            "[click](javascript:alert(1))",
            "[click](JavaScript:alert(1))",
            "[click](data:text/html,x)",
            "[click](/relative)",
            "[click](vbscript:x)",
        ] {
            assert_eq!(html(markdown), "<p>click</p>", "{markdown}");
            assert_eq!(
                adf(markdown),
                doc(json!([{"type":"paragraph","content":[{"type":"text","text":"click"}]}])),
                "{markdown}"
            );
        }
    }

    #[test]
    fn safe_links_are_links() {
        assert_eq!(
            html("<https://a.test/x> and <me@a.test> and [m](mailto:x@a.test)"),
            "<p><a href=\"https://a.test/x\">https://a.test/x</a> and \
             <a href=\"mailto:me@a.test\">me@a.test</a> and <a href=\"mailto:x@a.test\">m</a></p>"
        );
        assert_eq!(
            html("[](https://a.test/\"><script>)"),
            "<p><a href=\"https://a.test/&quot;&gt;&lt;script&gt;\">https://a.test/&quot;&gt;&lt;script&gt;</a></p>"
        );
    }

    #[test]
    fn other_constructs_keep_their_text() {
        let markdown = "> quoted\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![alt text](https://i.test/x.png)\n\n---\n\n- [x] done\n- [ ] todo\n\nnote[^1]\n\n[^1]: the footnote\n\n~~gone~~";
        let expected = doc(json!([
            {"type":"paragraph","content":[{"type":"text","text":"quoted"}]},
            {"type":"paragraph","content":[{"type":"text","text":"a | b"}]},
            {"type":"paragraph","content":[{"type":"text","text":"1 | 2"}]},
            {"type":"paragraph","content":[{"type":"text","text":"alt text"}]},
            {"type":"paragraph","content":[{"type":"text","text":"---"}]},
            {"type":"bulletList","content":[
                {"type":"listItem","content":[{"type":"paragraph","content":[{"type":"text","text":"[x] done"}]}]},
                {"type":"listItem","content":[{"type":"paragraph","content":[{"type":"text","text":"[ ] todo"}]}]}
            ]},
            {"type":"paragraph","content":[{"type":"text","text":"note[^1]"}]},
            {"type":"paragraph","content":[{"type":"text","text":"[^1]: the footnote"}]},
            {"type":"paragraph","content":[{"type":"text","text":"gone"}]}
        ]));
        assert_eq!(adf(markdown), expected);
    }

    #[test]
    fn loose_task_list_keeps_the_marker_in_the_paragraph() {
        let value = adf("- [x] done\n\n- [ ] todo\n");
        assert_eq!(
            value["content"][0]["content"][0]["content"],
            json!([{"type":"paragraph","content":[{"type":"text","text":"[x] done"}]}])
        );
    }

    #[test]
    fn empty_document() {
        assert_eq!(adf(""), doc(json!([])));
        assert_eq!(html(""), "");
        assert_eq!(adf("\n\n\n"), doc(json!([])));
        assert_eq!(adf("# "), doc(json!([])));
    }

    #[test]
    fn tricky_inputs_never_produce_invalid_adf() {
        let inputs = [
            "",
            "**",
            "*",
            "_",
            "`",
            "``",
            "` `",
            "```",
            "```\n",
            "```\n\n```",
            "~~~rust",
            "- ",
            "-",
            "1. ",
            "- - - ",
            "* \n* \n",
            "- [ ]",
            "- [x] ",
            "# ",
            "######",
            "####### seven",
            "[x]()",
            "[]()",
            "[](https://a.test)",
            "![]()",
            "![](https://i.test/x.png)",
            "<>",
            "<a></a>",
            "<!-- -->",
            "<br>",
            "\n\n\n",
            "   ",
            "\\",
            "a\\\n",
            "  \n  \n",
            "> ",
            ">",
            "> - ",
            "| |\n|-|\n| |",
            "|a|\n|-|",
            "[^1]\n\n[^1]:",
            "[^x]: ",
            "---",
            "***",
            "___",
            "&nbsp;",
            "&amp;",
            "**`**`**",
            "***`x`***",
            "[**`x`**](javascript:void(0))",
            "1) a\n2) b\n\n0. zero",
            "- a\n\n\n- b",
            "text\n===",
            "text\n---",
            "\u{0}",
            "\r\n\r\n",
            "```\n\t\n```",
        ];
        for input in inputs {
            let value = adf(input);
            assert_eq!(value["type"], "doc");
            assert_eq!(value["version"], 1);
            assert!(value["content"].is_array(), "{input:?}");
            assert_valid_adf(&value, input);
            // The Jira fake checks descriptions against the ADF schema the same way.
            assert_eq!(orgd_fakes::jira::validate_adf(&value), Ok(()), "{input:?}");
            let rendered = html(input);
            assert!(!rendered.contains("<a>"), "{input:?}");
            assert!(!rendered.contains("<script"), "{input:?}");
        }
    }

    #[test]
    fn html_never_contains_tags_from_the_input() {
        let input =
            "<img src=x onerror=alert(1)>\n\n*<i>x</i>*\n\n`<code>`\n\n[<b>](https://a.test)";
        let rendered = html(input);
        for forbidden in ["<img", "<i>", "<b>", "<code><code>"] {
            assert!(!rendered.contains(forbidden), "{rendered}");
        }
    }
}
