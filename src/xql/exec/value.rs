//! Values, columns and tables of the local engine.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

/// Marks a null in an integer or time column.
pub const NULL_INT: i64 = i64::MIN;
/// Marks a null in a dictionary-encoded column.
pub const NULL_CODE: u32 = u32::MAX;
const NULL_BOOL: u8 = 2;

/// One cell. Times are Unix milliseconds in UTC, as the tenant's JSON results carry
/// them.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Arc<str>),
    Time(i64),
    Array(Arc<Vec<Value>>),
}

impl Value {
    pub fn str(text: &str) -> Value {
        Value::Str(Arc::from(text))
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(v) | Value::Time(v) => Some(*v as f64),
            Value::Float(v) => Some(*v),
            Value::Str(s) => s.trim().parse().ok(),
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(v) | Value::Time(v) => Some(*v),
            Value::Float(v) if v.is_finite() => Some(*v as i64),
            Value::Str(s) => s.trim().parse().ok(),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    pub fn truthy(&self) -> bool {
        match self {
            Value::Bool(b) => *b,
            Value::Null => false,
            Value::Int(v) => *v != 0,
            Value::Str(s) => s.eq_ignore_ascii_case("true"),
            _ => true,
        }
    }

    /// The text form used by string functions and by comparisons of mixed types.
    pub fn to_text(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Int(v) => v.to_string(),
            Value::Float(v) => v.to_string(),
            Value::Str(s) => s.to_string(),
            Value::Time(ms) => crate::timefmt::rfc3339(*ms as f64 / 1000.0),
            Value::Array(items) => {
                let parts: Vec<String> = items.iter().map(Value::to_text).collect();
                parts.join(",")
            }
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(v) | Value::Time(v) => serde_json::Value::from(*v),
            Value::Float(v) => serde_json::Number::from_f64(*v)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Value::Str(s) => serde_json::Value::String(s.to_string()),
            Value::Array(items) => items.iter().map(Value::to_json).collect(),
        }
    }

    /// Total order for sorting: numbers (and times) by value, then strings, booleans,
    /// arrays; nulls after everything, so they end up last in an ascending sort.
    pub fn sort_cmp(&self, other: &Value) -> Ordering {
        fn rank(v: &Value) -> u8 {
            match v {
                Value::Int(_) | Value::Float(_) | Value::Time(_) => 0,
                Value::Str(_) => 1,
                Value::Bool(_) => 2,
                Value::Array(_) => 3,
                Value::Null => 4,
            }
        }
        match (self, other) {
            (Value::Int(a), Value::Int(b)) | (Value::Time(a), Value::Time(b)) => a.cmp(b),
            (Value::Str(a), Value::Str(b)) => a.cmp(b),
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            _ if rank(self) == 0 && rank(other) == 0 => {
                let (a, b) = (self.as_f64().unwrap_or(0.0), other.as_f64().unwrap_or(0.0));
                a.total_cmp(&b)
            }
            _ => rank(self).cmp(&rank(other)).then_with(|| self.to_text().cmp(&other.to_text())),
        }
    }

    /// A hashable form for grouping, distinct counts and join keys: equal values give
    /// equal keys (an integer and a float of the same value included).
    pub fn key(&self) -> Key {
        match self {
            Value::Null => Key::Null,
            Value::Bool(b) => Key::Bool(*b),
            Value::Int(v) | Value::Time(v) => Key::Int(*v),
            Value::Float(v) if v.fract() == 0.0 && v.abs() < 9.0e15 => Key::Int(*v as i64),
            Value::Float(v) => Key::Float(v.to_bits()),
            Value::Str(s) => Key::Str(s.clone()),
            Value::Array(items) => Key::Array(items.iter().map(Value::key).collect()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    Null,
    Bool(bool),
    Int(i64),
    Float(u64),
    Str(Arc<str>),
    Array(Vec<Key>),
}

/// One column of a table. Nulls are sentinels (`NULL_INT`, `NULL_CODE`, NaN, 2 for
/// booleans) so a column is one flat vector.
#[derive(Clone, Debug)]
pub enum Column {
    Int(Vec<i64>),
    Time(Vec<i64>),
    Float(Vec<f64>),
    Bool(Vec<u8>),
    Dict { codes: Vec<u32>, dict: Arc<Vec<Arc<str>>> },
    Values(Vec<Value>),
}

impl Column {
    pub fn len(&self) -> usize {
        match self {
            Column::Int(v) | Column::Time(v) => v.len(),
            Column::Float(v) => v.len(),
            Column::Bool(v) => v.len(),
            Column::Dict { codes, .. } => codes.len(),
            Column::Values(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, row: usize) -> Value {
        match self {
            Column::Int(v) => match v[row] {
                NULL_INT => Value::Null,
                x => Value::Int(x),
            },
            Column::Time(v) => match v[row] {
                NULL_INT => Value::Null,
                x => Value::Time(x),
            },
            Column::Float(v) => match v[row] {
                x if x.is_nan() => Value::Null,
                x => Value::Float(x),
            },
            Column::Bool(v) => match v[row] {
                NULL_BOOL => Value::Null,
                x => Value::Bool(x == 1),
            },
            Column::Dict { codes, dict } => match codes[row] {
                NULL_CODE => Value::Null,
                code => Value::Str(dict[code as usize].clone()),
            },
            Column::Values(v) => v[row].clone(),
        }
    }

    /// The rows `rows` of this column, in that order.
    pub fn gather(&self, rows: &[u32]) -> Column {
        fn pick<T: Clone>(v: &[T], rows: &[u32]) -> Vec<T> {
            rows.iter().map(|&r| v[r as usize].clone()).collect()
        }
        match self {
            Column::Int(v) => Column::Int(pick(v, rows)),
            Column::Time(v) => Column::Time(pick(v, rows)),
            Column::Float(v) => Column::Float(pick(v, rows)),
            Column::Bool(v) => Column::Bool(pick(v, rows)),
            Column::Dict { codes, dict } => {
                Column::Dict { codes: pick(codes, rows), dict: dict.clone() }
            }
            Column::Values(v) => Column::Values(pick(v, rows)),
        }
    }

    /// A column of values, choosing the compact layout when every value has one type.
    pub fn from_values(values: Vec<Value>) -> Column {
        let all = |f: fn(&Value) -> bool| values.iter().all(|v| v.is_null() || f(v));
        if !values.is_empty() && values.iter().any(|v| !v.is_null()) {
            if all(|v| matches!(v, Value::Int(x) if *x != NULL_INT)) {
                return Column::Int(
                    values.iter().map(|v| v.as_i64().unwrap_or(NULL_INT)).collect(),
                );
            }
            if all(|v| matches!(v, Value::Time(x) if *x != NULL_INT)) {
                return Column::Time(
                    values.iter().map(|v| v.as_i64().unwrap_or(NULL_INT)).collect(),
                );
            }
            if all(|v| matches!(v, Value::Str(_))) {
                let mut builder = DictBuilder::default();
                for v in &values {
                    match v {
                        Value::Str(s) => builder.push(s),
                        _ => builder.push_null(),
                    }
                }
                return builder.finish();
            }
        }
        Column::Values(values)
    }
}

/// Builds a dictionary-encoded string column.
#[derive(Default)]
pub struct DictBuilder {
    index: HashMap<Arc<str>, u32>,
    values: Vec<Arc<str>>,
    codes: Vec<u32>,
}

impl DictBuilder {
    pub fn push(&mut self, text: &str) {
        let code = self.code(text);
        self.codes.push(code);
    }

    pub fn push_null(&mut self) {
        self.codes.push(NULL_CODE);
    }

    /// The code for `text`, adding it to the dictionary when new.
    pub fn code(&mut self, text: &str) -> u32 {
        if let Some(&code) = self.index.get(text) {
            return code;
        }
        let code = self.values.len() as u32;
        let shared: Arc<str> = Arc::from(text);
        self.values.push(shared.clone());
        self.index.insert(shared, code);
        code
    }

    pub fn push_code(&mut self, code: u32) {
        self.codes.push(code);
    }

    pub fn finish(self) -> Column {
        Column::Dict { codes: self.codes, dict: Arc::new(self.values) }
    }
}

/// Named columns of equal length and, optionally, the rows still selected.
#[derive(Clone, Debug, Default)]
pub struct Table {
    pub names: Vec<String>,
    pub columns: Vec<Arc<Column>>,
    pub len: usize,
    /// Physical rows still in the table, in order; `None` means every row.
    pub selection: Option<Arc<Vec<u32>>>,
}

impl Table {
    pub fn new(names: Vec<String>, columns: Vec<Arc<Column>>) -> Table {
        let len = columns.first().map_or(0, |c| c.len());
        Table { names, columns, len, selection: None }
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// How many rows are selected.
    pub fn n_rows(&self) -> usize {
        self.selection.as_ref().map_or(self.len, |s| s.len())
    }

    /// Physical row numbers of the selected rows, in order.
    pub fn row_ids(&self) -> RowIds<'_> {
        match &self.selection {
            Some(rows) => RowIds::Selected(rows.iter()),
            None => RowIds::All(0..self.len),
        }
    }

    /// The same rows with the selection applied to every column.
    pub fn compact(&self) -> Table {
        let Some(rows) = &self.selection else { return self.clone() };
        let columns = self.columns.iter().map(|c| Arc::new(c.gather(rows))).collect();
        Table { names: self.names.clone(), columns, len: rows.len(), selection: None }
    }

    pub fn with_selection(&self, rows: Vec<u32>) -> Table {
        Table { selection: Some(Arc::new(rows)), ..self.clone() }
    }

    /// Replaces or adds a column; the table must be compact.
    pub fn set_column(&mut self, name: &str, column: Column) {
        let column = Arc::new(column);
        match self.column_index(name) {
            Some(idx) => self.columns[idx] = column,
            None => {
                self.names.push(name.to_string());
                self.columns.push(column);
            }
        }
    }

    /// The selected rows as JSON objects, in column order.
    pub fn to_rows(&self) -> Vec<serde_json::Map<String, serde_json::Value>> {
        self.map_rows(Value::to_json)
    }

    /// The selected rows as JSON objects, in column order, each cell written by `cell`.
    pub fn map_rows(
        &self,
        cell: impl Fn(&Value) -> serde_json::Value,
    ) -> Vec<serde_json::Map<String, serde_json::Value>> {
        self.row_ids()
            .map(|row| {
                self.names
                    .iter()
                    .zip(&self.columns)
                    .map(|(name, column)| (name.clone(), cell(&column.get(row))))
                    .collect()
            })
            .collect()
    }
}

pub enum RowIds<'a> {
    All(std::ops::Range<usize>),
    Selected(std::slice::Iter<'a, u32>),
}

impl Iterator for RowIds<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        match self {
            RowIds::All(range) => range.next(),
            RowIds::Selected(iter) => iter.next().map(|&r| r as usize),
        }
    }
}

impl Column {
    /// Like `gather`, with `None` giving a null (the unmatched side of an outer join).
    pub fn gather_opt(&self, rows: &[Option<u32>]) -> Column {
        fn pick<T: Clone>(v: &[T], rows: &[Option<u32>], null: T) -> Vec<T> {
            rows.iter().map(|r| r.map_or_else(|| null.clone(), |r| v[r as usize].clone())).collect()
        }
        match self {
            Column::Int(v) => Column::Int(pick(v, rows, NULL_INT)),
            Column::Time(v) => Column::Time(pick(v, rows, NULL_INT)),
            Column::Float(v) => Column::Float(pick(v, rows, f64::NAN)),
            Column::Bool(v) => Column::Bool(pick(v, rows, NULL_BOOL)),
            Column::Dict { codes, dict } => {
                Column::Dict { codes: pick(codes, rows, NULL_CODE), dict: dict.clone() }
            }
            Column::Values(v) => Column::Values(pick(v, rows, Value::Null)),
        }
    }

    /// A cheap grouping key for the value at `row`: dictionary columns give their
    /// code, so equal strings of one column give equal keys without hashing text.
    pub fn group_key(&self, row: usize) -> Key {
        match self {
            Column::Dict { codes, .. } => match codes[row] {
                NULL_CODE => Key::Null,
                code => Key::Int(i64::from(code)),
            },
            Column::Int(v) | Column::Time(v) => match v[row] {
                NULL_INT => Key::Null,
                x => Key::Int(x),
            },
            other => other.get(row).key(),
        }
    }
}
