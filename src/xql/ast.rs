//! The syntax tree of an XQL query. A query is a list of stages; `config` stages and
//! one source stage come first, then the pipeline. Subqueries (`join`, `union`,
//! `in (…)`) are whole `Query` values.
//!
//! Stages whose grammar the executor and validator need in detail get their own
//! variant. The presentation and enrichment stages (`getrole`, `iploc`, `tag`,
//! `transaction`, `view`) keep their arguments as a list of options and expressions,
//! which is enough to print, validate and refuse them faithfully.

use super::lexer::Span;

#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    pub stages: Vec<Stage>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    pub kind: StageKind,
    pub span: Span,
}

/// A field, alias or dataset name. `quoted` names were written in backticks and are
/// printed that way again.
#[derive(Clone, Debug, PartialEq)]
pub struct Name {
    pub text: String,
    pub quoted: bool,
    pub span: Span,
}

impl Name {
    pub fn new(text: impl Into<String>) -> Name {
        Name { text: text.into(), quoted: false, span: Span::default() }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    Dataset,
    Preset,
    ColdDataset,
    Datamodel,
}

impl SourceKind {
    pub fn keyword(self) -> &'static str {
        match self {
            SourceKind::Dataset => "dataset",
            SourceKind::Preset => "preset",
            SourceKind::ColdDataset => "cold_dataset",
            SourceKind::Datamodel => "datamodel",
        }
    }
}

/// `dataset = x`, `dataset in (x, y)`, `preset = network_story`, `datamodel` (with an
/// optional `dataset = x` after it).
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    pub kind: SourceKind,
    pub names: Vec<Name>,
    /// Written as `in (…)` rather than `= name`.
    pub list: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Assign {
    pub name: Name,
    pub value: Expr,
}

/// A `name = value` option inside a stage (`span = 1h`, `type = left`).
#[derive(Clone, Debug, PartialEq)]
pub struct Opt {
    pub name: String,
    pub value: Expr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SortKey {
    pub order: Option<Order>,
    pub field: Expr,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Aggregate {
    /// Always an `Expr::Call`.
    pub call: Expr,
    pub alias: Option<Name>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FieldItem {
    pub expr: Expr,
    pub alias: Option<Name>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ConfigValue {
    Expr(Expr),
    /// `config timeframe between "…" and "…"`.
    Between(Expr, Expr),
}

#[derive(Clone, Debug, PartialEq)]
pub enum UnionSource {
    Query(Box<Query>),
    Dataset(Name),
}

/// One element of a generic stage's argument list.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    Opt(Opt),
    Expr(Expr),
    /// A bare keyword such as `by`, `as`, `highlight`, `graph`.
    Word(String),
    Comma,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenericStage {
    Getrole,
    Iploc,
    Tag,
    Transaction,
    View,
}

impl GenericStage {
    pub fn keyword(self) -> &'static str {
        match self {
            GenericStage::Getrole => "getrole",
            GenericStage::Iploc => "iploc",
            GenericStage::Tag => "tag",
            GenericStage::Transaction => "transaction",
            GenericStage::View => "view",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Windowcomp {
    pub call: Expr,
    pub by: Vec<Expr>,
    pub sort: Vec<SortKey>,
    pub between: Option<(Expr, Option<Expr>)>,
    pub options: Vec<Opt>,
    pub alias: Option<Name>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StageKind {
    Config { name: Name, value: ConfigValue },
    Source(Source),
    Alter(Vec<Assign>),
    ArrayExpand { field: Expr, limit: Option<i64> },
    Bin { field: Expr, options: Vec<Opt> },
    Call { name: Name, options: Vec<Opt> },
    Comp { aggregates: Vec<Aggregate>, by: Vec<Expr>, options: Vec<Opt> },
    Dedup { fields: Vec<Expr>, by: Option<SortKey> },
    Fields { exclude: bool, items: Vec<FieldItem> },
    Filter(Expr),
    Join { options: Vec<Opt>, query: Box<Query>, alias: Name, on: Expr },
    Limit(i64),
    ReplaceNull(Vec<Assign>),
    Sort(Vec<SortKey>),
    Target { options: Vec<Opt>, name: Option<Name> },
    Top { count: Option<i64>, fields: Vec<Expr>, by: Vec<Expr>, options: Vec<Opt> },
    Union(UnionSource),
    Windowcomp(Box<Windowcomp>),
    Generic { stage: GenericStage, args: Vec<Arg> },
}

impl StageKind {
    /// The keyword that starts the stage.
    pub fn keyword(&self) -> &'static str {
        match self {
            StageKind::Config { .. } => "config",
            StageKind::Source(source) => source.kind.keyword(),
            StageKind::Alter(_) => "alter",
            StageKind::ArrayExpand { .. } => "arrayexpand",
            StageKind::Bin { .. } => "bin",
            StageKind::Call { .. } => "call",
            StageKind::Comp { .. } => "comp",
            StageKind::Dedup { .. } => "dedup",
            StageKind::Fields { .. } => "fields",
            StageKind::Filter(_) => "filter",
            StageKind::Join { .. } => "join",
            StageKind::Limit(_) => "limit",
            StageKind::ReplaceNull(_) => "replacenull",
            StageKind::Sort(_) => "sort",
            StageKind::Target { .. } => "target",
            StageKind::Top { .. } => "top",
            StageKind::Union(_) => "union",
            StageKind::Windowcomp(_) => "windowcomp",
            StageKind::Generic { stage, .. } => stage.keyword(),
        }
    }
}

/// Every stage keyword, for suggestions when a hunter mistypes one.
pub const STAGE_KEYWORDS: [&str; 26] = [
    "alter",
    "arrayexpand",
    "bin",
    "call",
    "cold_dataset",
    "comp",
    "config",
    "datamodel",
    "dataset",
    "dedup",
    "fields",
    "filter",
    "getrole",
    "iploc",
    "join",
    "limit",
    "preset",
    "replacenull",
    "sort",
    "tag",
    "target",
    "top",
    "transaction",
    "union",
    "view",
    "windowcomp",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Match,
    NotMatch,
    Contains,
    NotContains,
    Incidr,
    NotIncidr,
    Incidr6,
    NotIncidr6,
    Add,
    Sub,
    Mul,
    Div,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "or",
            BinOp::And => "and",
            BinOp::Eq => "=",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Match => "~=",
            BinOp::NotMatch => "!~=",
            BinOp::Contains => "contains",
            BinOp::NotContains => "not contains",
            BinOp::Incidr => "incidr",
            BinOp::NotIncidr => "not incidr",
            BinOp::Incidr6 => "incidr6",
            BinOp::NotIncidr6 => "not incidr6",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
        }
    }

    /// Binding strength: higher binds tighter.
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And => 2,
            BinOp::Add | BinOp::Sub => 5,
            BinOp::Mul | BinOp::Div => 6,
            _ => 4,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    Not,
    Neg,
}

#[derive(Clone, Debug, PartialEq)]
pub enum InSet {
    List(Vec<Expr>),
    Query(Box<Query>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Field(Name),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
    Duration(u64, String),
    /// `ENUM.PROCESS`, written with the prefix. A bare `PROCESS` is parsed as a field
    /// and resolved as an enum value where no such field exists.
    Enum(String),
    Call {
        name: String,
        args: Vec<Expr>,
    },
    Unary {
        op: UnaryOp,
        expr: Box<Expr>,
    },
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    In {
        expr: Box<Expr>,
        negated: bool,
        set: InSet,
    },
    JsonPath {
        expr: Box<Expr>,
        path: String,
    },
}

impl Expr {
    pub fn field(name: &str) -> Expr {
        Expr::Field(Name::new(name))
    }

    /// The field name when the expression is a plain field reference.
    pub fn as_field(&self) -> Option<&Name> {
        match self {
            Expr::Field(name) => Some(name),
            _ => None,
        }
    }
}
