//! The keys a sweep varies and the variants they make.
//!
//! A key is a path into the scenario's TOML: tables by name (`topology.racks_per_az`), arrays
//! of tables by index (`flows[0].gbps`) or by their `name` (`vms[hpc].count`,
//! `groups[hpc].strategy`), ending in the key set. A variant sets one value of every key; the
//! variants are the cartesian product, numbered with the first key outermost and the last
//! fastest, as nested loops would visit them. Each is the scenario's own text with the values
//! replaced where they stand (`toml_edit` keeps every other byte), so that its errors keep the
//! file's lines and columns.

use toml_edit::{DocumentMut, Item, TableLike, Value};

/// Most variants one sweep may have (each is a whole plan).
pub const MAX_VARIANTS: u64 = 100_000;

/// Which element of an array of tables.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Select {
    /// By position.
    Index(usize),
    /// The one whose `name` is this.
    Named(String),
}

/// One step of a key's path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    key: String,
    select: Option<Select>,
}

/// A key and the values it takes.
#[derive(Debug, Clone)]
pub struct Axis {
    /// As written (`vms[hpc].count`).
    pub key: String,
    path: Vec<Step>,
    /// Its values, in order.
    pub values: Vec<Value>,
}

fn parse_path(key: &str) -> Result<Vec<Step>, String> {
    let bad = |why: &str| format!("`{key}`: {why} (keys look like `vms[hpc].count`)");
    let is_name = |s: &str| {
        !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    let mut path = Vec::new();
    for part in key.split('.') {
        let (name, select) = match part.split_once('[') {
            None => (part, None),
            Some((name, rest)) => {
                let inner = rest.strip_suffix(']').ok_or_else(|| bad("a `[` is not closed"))?;
                let select = match inner.parse::<usize>() {
                    Ok(i) => Select::Index(i),
                    Err(_) if !inner.is_empty() && !inner.contains(['[', ']']) => {
                        Select::Named(inner.to_string())
                    }
                    Err(_) => return Err(bad("`[...]` holds an index or a name")),
                };
                (name, Some(select))
            }
        };
        if !is_name(name) {
            return Err(bad("each part is a bare TOML key"));
        }
        path.push(Step { key: name.to_string(), select });
    }
    if path.last().is_some_and(|s| s.select.is_some()) {
        return Err(bad("the last part names the key set, not an element"));
    }
    Ok(path)
}

/// A value as `--vary` gives it: a TOML value (`8`, `2.5`, `true`, `"a b"`), else a bare string
/// (`cluster`).
pub fn parse_value(s: &str) -> Value {
    s.trim().parse::<Value>().unwrap_or_else(|_| Value::from(s.trim()))
}

/// A value in a table: strings bare, everything else as TOML writes it.
pub fn label(v: &Value) -> String {
    match v.as_str() {
        Some(s) => s.to_string(),
        None => v.to_string().trim().to_string(),
    }
}

fn from_toml(v: &toml::Value) -> Result<Value, String> {
    v.to_string().parse::<Value>().map_err(|e| format!("value {v}: {e}"))
}

impl Axis {
    /// A key with its values.
    pub fn new(key: &str, values: Vec<Value>) -> Result<Self, String> {
        if values.is_empty() {
            return Err(format!("`{key}` has no values"));
        }
        Ok(Axis { key: key.to_string(), path: parse_path(key)?, values })
    }

    /// `--vary KEY=V1,V2,...`.
    pub fn from_arg(arg: &str) -> Result<Self, String> {
        let (key, values) =
            arg.split_once('=').ok_or_else(|| format!("--vary `{arg}` is not KEY=V1,V2,..."))?;
        let values: Vec<Value> =
            values.split(',').filter(|v| !v.trim().is_empty()).map(parse_value).collect();
        Axis::new(key.trim(), values).map_err(|e| format!("--vary {e}"))
    }

    /// A key of the scenario's `[sweep]`.
    pub fn from_decl(key: &str, values: &[toml::Value]) -> Result<Self, String> {
        let values = values.iter().map(from_toml).collect::<Result<Vec<_>, _>>()?;
        Axis::new(key, values)
    }

    /// Sets this key to `value` in `doc`: the value is replaced where it stands (keeping its
    /// comment), or added to its table if the scenario leaves it at its default.
    pub fn set(&self, doc: &mut DocumentMut, value: &Value) -> Result<(), String> {
        let key = &self.key;
        let Some((last, steps)) = self.path.split_last() else {
            return Err(format!("`{key}` is empty"));
        };
        let mut table: &mut dyn TableLike = doc.as_table_mut();
        let mut walked = String::new();
        for step in steps {
            if !walked.is_empty() {
                walked.push('.');
            }
            walked.push_str(&step.key);
            table = descend(table, step, &walked).map_err(|e| format!("`{key}`: {e}"))?;
            if let Some(s) = &step.select {
                walked.push_str(&match s {
                    Select::Index(i) => format!("[{i}]"),
                    Select::Named(n) => format!("[{n}]"),
                });
            }
        }
        match table.get_mut(&last.key) {
            Some(Item::Value(old)) => {
                let decor = old.decor().clone();
                *old = value.clone();
                *old.decor_mut() = decor;
            }
            Some(Item::None) | None => {
                table.insert(&last.key, Item::Value(value.clone()));
            }
            Some(_) => {
                return Err(format!("`{key}`: `{}` is a table, not a value", last.key));
            }
        }
        Ok(())
    }
}

/// The table `step` leads to from `table`, creating a missing plain table (`[network]` left at
/// its defaults).
fn descend<'a>(
    table: &'a mut dyn TableLike,
    step: &Step,
    walked: &str,
) -> Result<&'a mut dyn TableLike, String> {
    if table.get(&step.key).is_none() {
        if step.select.is_some() {
            return Err(format!("the scenario has no `{walked}`"));
        }
        let mut new = toml_edit::Table::new();
        new.set_implicit(true);
        table.insert(&step.key, Item::Table(new));
    }
    let Some(item) = table.get_mut(&step.key) else {
        return Err(format!("the scenario has no `{walked}`"));
    };
    let Some(select) = &step.select else {
        return item.as_table_like_mut().ok_or_else(|| format!("`{walked}` is not a table"));
    };
    let mut elements: Vec<&mut dyn TableLike> = match item {
        Item::ArrayOfTables(a) => a.iter_mut().map(|t| t as &mut dyn TableLike).collect(),
        Item::Value(Value::Array(a)) => {
            a.iter_mut().filter_map(|v| v.as_inline_table_mut().map(|t| t as _)).collect()
        }
        _ => return Err(format!("`{walked}` is not an array of tables")),
    };
    let n = elements.len();
    match select {
        Select::Index(i) => {
            if *i < n {
                Ok(elements.swap_remove(*i))
            } else {
                Err(format!("`{walked}` has {n} entries; there is no [{i}]"))
            }
        }
        Select::Named(name) => {
            let named =
                |t: &dyn TableLike| t.get("name").and_then(|v| v.as_str()).map(str::to_string);
            match elements.iter().position(|t| named(&**t).as_deref() == Some(name.as_str())) {
                Some(at) => Ok(elements.swap_remove(at)),
                None => {
                    let names: Vec<String> = elements.iter().filter_map(|t| named(&**t)).collect();
                    Err(format!(
                        "no `{walked}` is named `{name}` (they are: {})",
                        if names.is_empty() { "none named".into() } else { names.join(", ") }
                    ))
                }
            }
        }
    }
}

/// The variants of `axes`: how many, and which value of each axis variant `i` takes.
#[derive(Debug, Clone)]
pub struct Variants {
    axes: Vec<Axis>,
    count: usize,
}

impl Variants {
    /// The product of `axes`, refused above [`MAX_VARIANTS`].
    pub fn new(axes: Vec<Axis>) -> Result<Self, String> {
        if axes.is_empty() {
            return Err("nothing to vary: give --vary KEY=V1,V2,... or a [sweep] table".into());
        }
        let mut count: u64 = 1;
        for a in &axes {
            count = count.saturating_mul(a.values.len() as u64);
        }
        if count > MAX_VARIANTS {
            let sizes: Vec<String> = axes.iter().map(|a| a.values.len().to_string()).collect();
            return Err(format!(
                "the sweep has {} variants ({}); at most {} are planned in one sweep",
                crate::scenario::thousands(count),
                sizes.join(" × "),
                crate::scenario::thousands(MAX_VARIANTS)
            ));
        }
        Ok(Variants { axes, count: count as usize })
    }

    /// The keys, outermost first.
    pub fn axes(&self) -> &[Axis] {
        &self.axes
    }

    /// How many variants.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Variant `i`'s value of each axis (the last axis varies fastest).
    pub fn values(&self, mut i: usize) -> Vec<&Value> {
        let mut out = Vec::with_capacity(self.axes.len());
        for a in self.axes.iter().rev() {
            let n = a.values.len();
            out.push(&a.values[i % n]);
            i /= n;
        }
        out.reverse();
        out
    }

    /// Variant `i`'s scenario text: `base` with each key set to its value.
    pub fn text(&self, base: &DocumentMut, i: usize) -> Result<String, String> {
        let mut doc = base.clone();
        for (axis, value) in self.axes.iter().zip(self.values(i)) {
            axis.set(&mut doc, value)?;
        }
        Ok(doc.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "\
name = \"t\"   # the name
[topology]
azs = 1

[[vms]]
name = \"web\"
count = 2 # two of them

[[vms]]
name = \"hpc\"
count = 8

[[flows]]
from = \"web-*\"
to = \"hpc-*\"
";

    fn doc() -> DocumentMut {
        BASE.parse().unwrap()
    }

    #[test]
    fn a_value_is_replaced_where_it_stands_and_nothing_else_moves() {
        let axis = Axis::from_arg("vms[web].count=5").unwrap();
        let mut d = doc();
        axis.set(&mut d, &axis.values[0]).unwrap();
        let text = d.to_string();
        assert_eq!(text, BASE.replace("count = 2 # two", "count = 5 # two"));
    }

    #[test]
    fn elements_are_found_by_index_or_name_and_missing_keys_are_added() {
        let mut d = doc();
        Axis::from_arg("vms[1].count=3").unwrap().set(&mut d, &Value::from(3)).unwrap();
        Axis::new("flows[0].gbps", vec![Value::from(2.5)])
            .unwrap()
            .set(&mut d, &Value::from(2.5))
            .unwrap();
        Axis::new("network.flow_cap_gbps", vec![Value::from(5)])
            .unwrap()
            .set(&mut d, &Value::from(5))
            .unwrap();
        let t: toml::Table = d.to_string().parse().unwrap();
        assert_eq!(t["vms"][1]["count"].as_integer(), Some(3));
        assert_eq!(t["vms"][0]["count"].as_integer(), Some(2));
        assert_eq!(t["flows"][0]["gbps"].as_float(), Some(2.5));
        assert_eq!(t["network"]["flow_cap_gbps"].as_integer(), Some(5));
    }

    #[test]
    fn keys_that_lead_nowhere_say_where() {
        let mut d = doc();
        let e = Axis::from_arg("vms[db].count=1").unwrap().set(&mut d, &Value::from(1));
        assert_eq!(e.unwrap_err(), "`vms[db].count`: no `vms` is named `db` (they are: web, hpc)");
        let e = Axis::from_arg("vms[7].count=1").unwrap().set(&mut d, &Value::from(1));
        assert_eq!(e.unwrap_err(), "`vms[7].count`: `vms` has 2 entries; there is no [7]");
        let e = Axis::from_arg("groups[a].strategy=x").unwrap().set(&mut d, &Value::from("x"));
        assert_eq!(e.unwrap_err(), "`groups[a].strategy`: the scenario has no `groups`");
        let e = Axis::from_arg("topology=1").unwrap().set(&mut d, &Value::from(1));
        assert_eq!(e.unwrap_err(), "`topology`: `topology` is a table, not a value");
        for bad in ["vms[web.count=1", "vms[].count=1", "a..b=1", "vms[0]=1", "count", "x="] {
            assert!(Axis::from_arg(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_are_toml_or_bare_strings() {
        let a = Axis::from_arg("k=8, 2.5,true,cluster,\"a b\"").unwrap();
        let labels: Vec<String> = a.values.iter().map(label).collect();
        assert_eq!(labels, ["8", "2.5", "true", "cluster", "a b"]);
        assert_eq!(a.values[0].as_integer(), Some(8));
        assert_eq!(a.values[3].as_str(), Some("cluster"));
    }

    #[test]
    fn variants_count_like_nested_loops() {
        let v = Variants::new(vec![
            Axis::from_arg("a=1,2,3").unwrap(),
            Axis::from_arg("b=x,y").unwrap(),
        ])
        .unwrap();
        assert_eq!(v.count(), 6);
        let mut seen = Vec::new();
        for a in ["1", "2", "3"] {
            for b in ["x", "y"] {
                seen.push(vec![a.to_string(), b.to_string()]);
            }
        }
        let got: Vec<Vec<String>> =
            (0..6).map(|i| v.values(i).into_iter().map(label).collect()).collect();
        assert_eq!(got, seen);
    }

    #[test]
    fn too_many_variants_are_refused_before_any_is_made() {
        let many: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        let axis = |k: &str| Axis::from_arg(&format!("{k}={}", many.join(","))).unwrap();
        let e = Variants::new(vec![axis("a"), axis("b")]).unwrap_err();
        assert_eq!(
            e,
            "the sweep has 1,000,000 variants (1000 × 1000); at most 100,000 are planned in \
             one sweep"
        );
        assert!(Variants::new(Vec::new()).is_err());
    }
}
