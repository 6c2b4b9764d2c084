//! pyo3 wrapper of [`crate::policy`]: `CompiledPolicy`.
//!
//! Data flow: `CompiledPolicy(json)` compiles the normalised policy (without the GIL) and then,
//! once, interns every string a decision can return (effects, rule ids, redaction paths) and
//! every object key of every argument path the rules test. `decide` reads the call's
//! arguments straight from the caller's `dict` through those interned keys, touching only the
//! paths a candidate rule asks about (no serialisation, no copy of the arguments), and answers
//! with those interned strings. It keeps the GIL: a decision takes well under a microsecond,
//! less than releasing and re-taking the GIL would cost, and it reads live Python objects.
//! `decide_json` takes the arguments as JSON text instead (a tool call as an LLM returns it).

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyBytes, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet, PyString, PyTuple,
};

use super::run;
use crate::error::{CoreError, CoreResult};
use crate::policy::{
    regex_error, Args, CompiledPolicy, Decision, LabelSet, Num, Request, Seg, Val, DEFAULT_RULE_ID,
};

/// Register this module's classes on `_core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyCompiledPolicy>()?;
    Ok(())
}

/// One step of an argument path, with its key interned for fast `dict` lookups.
enum PySeg {
    Key(Py<PyString>),
    Index(usize),
}

/// The arguments of one call, read from a Python `dict` along pre-interned paths.
struct PyArgs<'a, 'py> {
    root: &'a Bound<'py, PyAny>,
    paths: &'a [Vec<PySeg>],
}

fn child<'py>(cur: &Bound<'py, PyAny>, seg: &PySeg) -> Option<Bound<'py, PyAny>> {
    match seg {
        // A lookup that raises (a key with a broken __eq__) reads as "absent".
        PySeg::Key(k) => cur
            .cast::<PyDict>()
            .ok()?
            .get_item(k.bind(cur.py()))
            .ok()
            .flatten(),
        PySeg::Index(i) => match cur.cast::<PyList>() {
            Ok(list) => list.get_item(*i).ok(),
            Err(_) => cur.cast::<PyTuple>().ok()?.get_item(*i).ok(),
        },
    }
}

/// The scalar view of a Python value, mirroring `reference.py`: ints outside `i64` become
/// floats (or, beyond a float's range, stop being numbers), `bool` is not a number.
fn scalar_view<'a>(v: &'a Bound<'_, PyAny>, path: &[Seg]) -> CoreResult<Val<'a>> {
    if v.is_none() {
        return Ok(Val::Null);
    }
    if let Ok(b) = v.cast::<PyBool>() {
        return Ok(Val::Bool(b.is_true()));
    }
    if v.cast::<PyInt>().is_ok() {
        return Ok(match v.extract::<i64>() {
            Ok(i) => Val::Num(Num::Int(i)),
            Err(_) => v
                .extract::<f64>()
                .map_or(Val::Other, |f| Val::Num(Num::Float(f))),
        });
    }
    if let Ok(f) = v.cast::<PyFloat>() {
        return Ok(Val::Num(Num::Float(f.value())));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return s.to_str().map(Val::Str).map_err(|_| {
            CoreError::InvalidInput(format!(
                "argument {} is not valid Unicode (a lone surrogate?); refusing to decide",
                render(path)
            ))
        });
    }
    Ok(Val::Other)
}

fn render(path: &[Seg]) -> String {
    let mut out = String::from("$");
    for seg in path {
        match seg {
            Seg::Key(k) => {
                out.push_str("[\"");
                out.push_str(k);
                out.push_str("\"]");
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

impl Args for PyArgs<'_, '_> {
    fn with_value<R>(
        &self,
        path_id: usize,
        path: &[Seg],
        f: impl FnOnce(Val<'_>) -> R,
    ) -> CoreResult<R> {
        let mut cur = self.root.clone();
        for seg in &self.paths[path_id] {
            match child(&cur, seg) {
                Some(next) => cur = next,
                None => return Ok(f(Val::Missing)),
            }
        }
        Ok(f(scalar_view(&cur, path)?))
    }
}

/// A tool-call policy compiled for evaluation (build it from the JSON that
/// `routeguard.enforce.policy` writes; use it through `routeguard.enforce.PolicyEngine`).
#[pyclass(name = "CompiledPolicy", module = "routeguard._core", frozen)]
pub struct PyCompiledPolicy {
    inner: CompiledPolicy,
    /// Interned keys of every argument path, indexed like `inner.paths()`.
    paths: Vec<Vec<PySeg>>,
    rule_ids: Vec<Py<PyString>>,
    redact_paths: Vec<Py<PyString>>,
    /// allow, deny, require_approval, redact, and the default rule id.
    names: [Py<PyString>; 5],
}

/// A decision as Python sees it: `(effect, rule_id, ((path, rule_id), ...))`.
type PyDecision<'py> = (
    Bound<'py, PyString>,
    Bound<'py, PyString>,
    Bound<'py, PyTuple>,
);

impl PyCompiledPolicy {
    fn labels(&self, labels: &Bound<'_, PyAny>) -> PyResult<LabelSet> {
        let mut set = LabelSet::default();
        let mut add = |item: Bound<'_, PyAny>| -> PyResult<()> {
            let s = item.cast::<PyString>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "session labels must be strings, got {}",
                    item.get_type()
                        .name()
                        .map_or_else(|_| "?".into(), |n| n.to_string())
                ))
            })?;
            if let Some(id) = self.inner.label_id(s.to_str()?) {
                set.insert(id);
            }
            Ok(())
        };
        if let Ok(s) = labels.cast::<PyFrozenSet>() {
            s.iter().try_for_each(&mut add)?;
        } else if let Ok(s) = labels.cast::<PySet>() {
            s.iter().try_for_each(&mut add)?;
        } else {
            for item in labels.try_iter()? {
                add(item?)?;
            }
        }
        Ok(set)
    }

    fn to_py<'py>(&self, py: Python<'py>, d: &Decision) -> PyResult<PyDecision<'py>> {
        let effect = match d.effect {
            crate::policy::Effect::Allow => &self.names[0],
            crate::policy::Effect::Deny => &self.names[1],
            crate::policy::Effect::RequireApproval => &self.names[2],
            crate::policy::Effect::Redact => &self.names[3],
        };
        let rule = d.rule.map_or(&self.names[4], |i| &self.rule_ids[i]);
        let redactions = if d.redactions.is_empty() {
            PyTuple::empty(py)
        } else {
            PyTuple::new(
                py,
                d.redactions
                    .iter()
                    .map(|&(p, r)| (self.redact_paths[p].bind(py), self.rule_ids[r].bind(py))),
            )?
        };
        Ok((effect.bind(py).clone(), rule.bind(py).clone(), redactions))
    }
}

#[pymethods]
impl PyCompiledPolicy {
    #[new]
    fn new(py: Python<'_>, json: &str) -> PyResult<Self> {
        let inner = run(py, || CompiledPolicy::from_json(json))?;
        let intern = |s: &str| PyString::intern(py, s).unbind();
        let paths = inner
            .paths()
            .iter()
            .map(|p| {
                p.segs
                    .iter()
                    .map(|s| match s {
                        Seg::Key(k) => PySeg::Key(intern(k)),
                        Seg::Index(i) => PySeg::Index(*i),
                    })
                    .collect()
            })
            .collect();
        Ok(PyCompiledPolicy {
            paths,
            rule_ids: inner.rules().iter().map(|r| intern(&r.id)).collect(),
            redact_paths: inner.redact_paths().iter().map(|p| intern(p)).collect(),
            names: [
                "allow",
                "deny",
                "require_approval",
                "redact",
                DEFAULT_RULE_ID,
            ]
            .map(intern),
            inner,
        })
    }

    /// The rule id reported when no rule matched.
    #[classattr]
    const DEFAULT_RULE_ID: &'static str = DEFAULT_RULE_ID;

    fn __len__(&self) -> usize {
        self.inner.rules().len()
    }

    fn __repr__(&self) -> String {
        format!("CompiledPolicy(rules={})", self.inner.rules().len())
    }

    /// Decide on one tool call whose arguments are a `dict` (read in place).
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (agent_id, role, trust, delegation_depth, tool, args, step, labels, now))]
    fn decide<'py>(
        &self,
        py: Python<'py>,
        agent_id: &str,
        role: &str,
        trust: f64,
        delegation_depth: i64,
        tool: &str,
        args: &Bound<'py, PyAny>,
        step: i64,
        labels: &Bound<'py, PyAny>,
        now: f64,
    ) -> PyResult<PyDecision<'py>> {
        let labels = self.labels(labels)?;
        let args = PyArgs {
            root: args,
            paths: &self.paths,
        };
        let req = Request {
            agent_id,
            role,
            trust,
            delegation_depth,
            tool,
            args: &args,
            step,
            labels: &labels,
            now,
        };
        let d = self.inner.decide(&req).map_err(PyErr::from)?;
        self.to_py(py, &d)
    }

    /// Decide on one tool call whose arguments are JSON text (`str` or `bytes`).
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (agent_id, role, trust, delegation_depth, tool, args_json, step, labels, now))]
    fn decide_json<'py>(
        &self,
        py: Python<'py>,
        agent_id: &str,
        role: &str,
        trust: f64,
        delegation_depth: i64,
        tool: &str,
        args_json: &Bound<'py, PyAny>,
        step: i64,
        labels: &Bound<'py, PyAny>,
        now: f64,
    ) -> PyResult<PyDecision<'py>> {
        let bytes = if let Ok(b) = args_json.cast::<PyBytes>() {
            b.as_bytes()
        } else if let Ok(s) = args_json.cast::<PyString>() {
            s.to_str()?.as_bytes()
        } else {
            return Err(PyTypeError::new_err("args_json must be str or bytes"));
        };
        let args: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            PyErr::from(CoreError::InvalidInput(format!(
                "tool arguments are not valid JSON: {e}"
            )))
        })?;
        let labels = self.labels(labels)?;
        let req = Request {
            agent_id,
            role,
            trust,
            delegation_depth,
            tool,
            args: &args,
            step,
            labels: &labels,
            now,
        };
        let d = self.inner.decide(&req).map_err(PyErr::from)?;
        self.to_py(py, &d)
    }

    /// Why the compiled matcher rejects `pattern` as a regex, or None if it accepts it.
    #[staticmethod]
    fn regex_error(pattern: &str) -> Option<String> {
        regex_error(pattern)
    }
}
