//! `seedgate plugin check FILE.wasm`: what a plugin file is, which world it
//! implements, what it imports and exports, and precisely what is wrong
//! with it (a core module, a component of another world, a missing or
//! mistyped export, an import the host does not provide).

use std::fmt::Write as _;

use sha2::{Digest, Sha256};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, types};

use super::PluginHost;
use super::bindings::OriginPluginPre;
use super::scheduler::bindings::SchedulerPluginPre;

const ORIGIN_EXPORT: &str = "seedgate:plugin/origin@0.1.0";
const ORIGIN_FUNCS: &[&str] = &["schemes", "stat", "plan-read", "list-objects"];
const SCHED_EXPORT: &str = "seedgate:plugin/scheduling@0.1.0";
const SCHED_FUNCS: &[&str] = &["rank-parents", "order-pieces"];

/// What `check` found.
#[derive(Debug, Default)]
pub struct Report {
    /// `seedgate:plugin/origin-plugin@0.1.0` or `…/scheduler-plugin@0.1.0`
    /// when the file is a usable plugin of that world.
    pub world: Option<&'static str>,
    pub kind: String,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    pub problems: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.world.is_some()
    }

    pub fn render(&self, file: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{file}: {}", self.kind);
        match self.world {
            Some(w) => {
                let _ = writeln!(out, "world: {w}");
            }
            None => {
                let _ = writeln!(out, "world: none that seedgate runs");
            }
        }
        for (title, items) in [("imports", &self.imports), ("exports", &self.exports)] {
            let _ = writeln!(out, "{title}:");
            if items.is_empty() {
                let _ = writeln!(out, "  (none)");
            }
            for i in items {
                let _ = writeln!(out, "  {i}");
            }
        }
        if self.ok() {
            let _ = writeln!(out, "ok");
        } else {
            let _ = writeln!(out, "problems:");
            for p in &self.problems {
                let _ = writeln!(out, "  - {p}");
            }
        }
        out
    }
}

fn describe(engine: &wasmtime::Engine, name: &str, item: &ComponentItem) -> String {
    match item {
        ComponentItem::ComponentInstance(inst) => {
            let funcs: Vec<&str> = inst
                .exports(engine)
                .filter(|(_, e)| matches!(e.ty, ComponentItem::ComponentFunc(_)))
                .map(|(n, _)| n)
                .collect();
            format!("{name} (functions: {})", funcs.join(", "))
        }
        ComponentItem::ComponentFunc(_) => format!("{name} (function)"),
        ComponentItem::Resource(_) | ComponentItem::Type(_) => format!("{name} (type)"),
        ComponentItem::Module(_) | ComponentItem::CoreFunc(_) => format!("{name} (core item)"),
        ComponentItem::Component(_) => format!("{name} (component)"),
    }
}

/// The names an exported interface offers, if `name` is one.
fn instance_funcs(
    engine: &wasmtime::Engine,
    ty: &types::Component,
    name: &str,
) -> Option<Vec<String>> {
    match ty.get_export(engine, name)?.ty {
        ComponentItem::ComponentInstance(inst) => {
            Some(inst.exports(engine).map(|(n, _)| n.to_string()).collect())
        }
        _ => Some(Vec::new()),
    }
}

impl PluginHost {
    /// Examines a plugin file without loading it into any origin.
    pub fn check(&self, bytes: &[u8]) -> Report {
        let mut r = Report::default();
        let digest = hex::encode(Sha256::digest(bytes));
        if !bytes.starts_with(b"\0asm") {
            r.kind = format!("{} bytes, not WebAssembly", bytes.len());
            r.problems.push(
                "not a WebAssembly binary (no \\0asm header): is this the right file?".into(),
            );
            return r;
        }
        if wasmtime::wasmparser::Parser::is_core_wasm(bytes) {
            r.kind = format!(
                "core WebAssembly module, {} bytes, sha256 {digest}",
                bytes.len()
            );
            if let Ok(module) = wasmtime::Module::new(self.engine(), bytes) {
                r.imports = module
                    .imports()
                    .map(|i| format!("{}::{}", i.module(), i.name()))
                    .collect();
                r.exports = module.exports().map(|e| e.name().to_string()).collect();
            }
            r.problems.push(
                "a core module, not a component: seedgate plugins are WebAssembly components; build for wasm32-wasip2 (cargo build --target wasm32-wasip2) or wrap the module with `wasm-tools component new`".into(),
            );
            return r;
        }
        r.kind = format!("component, {} bytes, sha256 {digest}", bytes.len());
        if let Some(v) = super::component_version(bytes) {
            r.kind.push_str(&format!(", version {v}"));
        }
        let component = match Component::new(self.engine(), bytes) {
            Ok(c) => c,
            Err(e) => {
                r.problems.push(format!(
                    "does not compile: {}",
                    super::first_line(&format!("{e:#}"))
                ));
                return r;
            }
        };
        let engine = self.engine();
        let ty = component.component_type();
        r.imports = ty
            .imports(engine)
            .map(|(n, e)| describe(engine, n, &e.ty))
            .collect();
        r.exports = ty
            .exports(engine)
            .map(|(n, e)| describe(engine, n, &e.ty))
            .collect();

        let (world, export, funcs) = if let Some(f) = instance_funcs(engine, &ty, ORIGIN_EXPORT) {
            (
                "seedgate:plugin/origin-plugin@0.1.0",
                ORIGIN_EXPORT,
                (ORIGIN_FUNCS, f),
            )
        } else if let Some(f) = instance_funcs(engine, &ty, SCHED_EXPORT) {
            (
                "seedgate:plugin/scheduler-plugin@0.1.0",
                SCHED_EXPORT,
                (SCHED_FUNCS, f),
            )
        } else {
            let names: Vec<&str> = ty.exports(engine).map(|(n, _)| n).collect();
            r.problems.push(format!(
                "a component of another world: it exports {}, but an origin plugin exports {ORIGIN_EXPORT} and a scheduling policy {SCHED_EXPORT}",
                if names.is_empty() { "nothing".to_string() } else { names.join(", ") }
            ));
            return r;
        };
        let (wanted, have) = funcs;
        for f in wanted {
            if !have.iter().any(|h| h == f) {
                r.problems
                    .push(format!("missing export: function `{f}` of {export}"));
            }
        }
        // Types and imports: exactly what loading would check.
        let linked = if export == ORIGIN_EXPORT {
            self.linker
                .instantiate_pre(&component)
                .map_err(|e| format!("imports what seedgate does not provide: {e:#}"))
                .and_then(|pre| {
                    OriginPluginPre::new(pre)
                        .map(|_| ())
                        .map_err(|e| format!("does not match the origin-plugin world: {e:#}"))
                })
        } else {
            self.sched_linker
                .instantiate_pre(&component)
                .map_err(|e| {
                    format!("imports what a scheduling policy may not use (it gets no seedgate imports): {e:#}")
                })
                .and_then(|pre| {
                    SchedulerPluginPre::new(pre)
                        .map(|_| ())
                        .map_err(|e| format!("does not match the scheduler-plugin world: {e:#}"))
                })
        };
        if let Err(e) = linked
            && r.problems.is_empty()
        {
            r.problems.push(e.replace('\n', " "));
        }
        if r.problems.is_empty() {
            r.world = Some(world);
        }
        r
    }
}
