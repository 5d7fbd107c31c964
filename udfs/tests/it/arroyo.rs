//! The Arroyo plugins of `udfs/arroyo/`, built with cargo as cdylibs and called the way
//! Arroyo's worker calls a sync UDF (arroyo-udf-host's `SyncUdfDylib::invoke_with_args`):
//! the library is loaded, its `__run` symbol takes the argument arrays through the Arrow
//! C Data Interface in an `FfiArrays` buffer and answers a `RunResult`. Arguments are cast
//! to the types the definition declares first (Arroyo's planner coerces to the UDF's exact
//! signature; our tables hold `Utf8View`, the plugins take `Utf8`).
//!
//! The plugin frees the argument buffer with `Vec::from_raw_parts`, so with its own
//! allocator, the system's: the buffer is allocated here with [`System`] explicitly, not
//! with whatever the host's global allocator is (tidemark's binary uses mimalloc).
//!
//! Each plugin's answers are compared with the shared vectors and with the DataFusion UDF
//! of the same name on the same batches, among them a sliced batch (non-zero offsets).

#![allow(unsafe_code)] // dlopen and the Arrow C Data Interface are FFI by nature

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringViewArray, make_array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Float64Type, Int32Type, Schema, UInt64Type};
use arrow::ffi::{FFI_ArrowArray, FFI_ArrowSchema, from_ffi, to_ffi};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use quote::ToTokens;
use serde_json::Value;

/// arroyo-udf-common 0.2's `FfiArraySchema`: one array and its type.
#[repr(C)]
struct FfiArraySchema(FFI_ArrowArray, FFI_ArrowSchema);

/// arroyo-udf-common 0.2's `FfiArrays`, the argument of `__run`: the parts of a
/// `Vec<FfiArraySchema>` that the plugin takes back with `Vec::from_raw_parts`.
#[repr(C)]
struct FfiArrays {
    ptr: *mut FfiArraySchema,
    len: usize,
    capacity: usize,
    error: bool,
}

/// arroyo-udf-common 0.2's `RunResult`; `Err` when the function panicked.
#[repr(C)]
#[allow(dead_code)] // built by the plugin, only matched here
enum RunResult {
    Ok(FfiArraySchema),
    Err,
}

type Run = unsafe extern "C-unwind" fn(FfiArrays) -> RunResult;

/// The argument buffer, allocated with the system allocator (the plugin's).
fn ffi_args(args: &[ArrayRef]) -> FfiArrays {
    let len = args.len();
    assert!(len > 0, "every UDF takes an argument");
    let layout = Layout::array::<FfiArraySchema>(len).unwrap();
    // SAFETY: the layout is not zero-sized; the pointer is checked before use.
    let ptr = unsafe { System.alloc(layout) }.cast::<FfiArraySchema>();
    assert!(!ptr.is_null());
    for (i, array) in args.iter().enumerate() {
        let (array, schema) = to_ffi(&array.to_data()).unwrap();
        // SAFETY: `i < len`, inside the allocation; each slot is written once.
        unsafe { ptr.add(i).write(FfiArraySchema(array, schema)) };
    }
    FfiArrays {
        ptr,
        len,
        capacity: len,
        error: false,
    }
}

/// A loaded plugin and the signature its definition file declares.
struct Plugin {
    name: String,
    args: Vec<DataType>,
    returns: DataType,
    run: Run,
    // Last: arrays the plugin built are released by code in the library.
    _library: libloading::Library,
}

impl Plugin {
    fn call(&self, inputs: &[ArrayRef]) -> ArrayRef {
        let args: Vec<ArrayRef> = inputs
            .iter()
            .zip(&self.args)
            .map(|(a, t)| cast(a, t).unwrap())
            .collect();
        // SAFETY: `run` is the plugin's `__run` with arroyo-udf-common 0.2's signature;
        // it owns the arguments from here on (and frees them with the system allocator).
        match unsafe { (self.run)(ffi_args(&args)) } {
            RunResult::Ok(FfiArraySchema(array, schema)) => {
                // SAFETY: a valid C Data Interface array and schema from the plugin.
                make_array(unsafe { from_ffi(array, &schema) }.unwrap())
            }
            RunResult::Err => panic!("the {} plugin panicked", self.name),
        }
    }
}

/// The Arrow type and nullability of a Rust type in a `#[udf]` signature, as
/// arroyo-udf-common's `rust_to_arrow` maps the ones our definitions use.
fn arrow_type(ty: &str) -> (DataType, bool) {
    if let Some(inner) = ty.strip_prefix("Option<").and_then(|t| t.strip_suffix('>')) {
        return (arrow_type(inner).0, true);
    }
    let t = match ty {
        "&str" | "String" => DataType::Utf8,
        "u64" => DataType::UInt64,
        "i32" => DataType::Int32,
        "f64" => DataType::Float64,
        "bool" => DataType::Boolean,
        other => panic!("type {other} is not used by our UDFs"),
    };
    (t, false)
}

/// Name, argument types and return type of the `#[udf]` function of a definition.
fn signature(definition: &str) -> (String, Vec<DataType>, DataType) {
    let file = syn::parse_file(definition).unwrap();
    let mut udfs = file.items.iter().filter_map(|item| match item {
        syn::Item::Fn(f) if f.attrs.iter().any(|a| a.path().is_ident("udf")) => Some(f),
        _ => None,
    });
    let f = udfs.next().expect("a #[udf] function");
    assert!(udfs.next().is_none(), "one #[udf] function per definition");
    let render = |t: &syn::Type| t.to_token_stream().to_string().replace(' ', "");
    let args = f
        .sig
        .inputs
        .iter()
        .map(|a| match a {
            syn::FnArg::Typed(p) => arrow_type(&render(&p.ty)).0,
            syn::FnArg::Receiver(_) => panic!("a UDF takes no self"),
        })
        .collect();
    let syn::ReturnType::Type(_, ret) = &f.sig.output else {
        panic!("a UDF returns a value")
    };
    (f.sig.ident.to_string(), args, arrow_type(&render(ret)).0)
}

/// The `[dependencies]` of a definition's header comment, as Arroyo reads it.
fn header_dependencies(definition: &str) -> toml::Table {
    let start = definition
        .find("/*\n[dependencies]\n")
        .expect("a /*\\n[dependencies]\\n…*/ header");
    let end = start + definition[start..].find("*/").unwrap();
    let header: toml::Table = toml::from_str(&definition[start + 3..end]).unwrap();
    header["dependencies"].as_table().unwrap().clone()
}

/// A dependency table with every `path` made absolute (relative to `base`).
fn resolve_paths(mut deps: toml::Table, base: &Path) -> toml::Table {
    for (_, dep) in deps.iter_mut() {
        if let Some(path) = dep.get_mut("path") {
            let full = base.join(path.as_str().unwrap()).canonicalize().unwrap();
            *path = toml::Value::String(full.display().to_string());
        }
    }
    deps
}

/// Builds the plugin workspace (`--locked`: its Cargo.lock is committed) into this test
/// target's scratch directory, so the main target directory's lock is not contended.
fn build_plugins(arroyo: &Path) -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("arroyo-plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = Command::new(cargo)
        .args(["build", "--locked", "--quiet", "--manifest-path"])
        .arg(arroyo.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .unwrap();
    assert!(status.success(), "building udfs/arroyo failed");
    target.join("debug")
}

/// Builds and loads every plugin, checking each manifest against its definition's header.
fn load_plugins() -> Vec<Plugin> {
    let udfs = Path::new(env!("CARGO_MANIFEST_DIR"));
    let arroyo = udfs.join("arroyo");
    let out = build_plugins(&arroyo);
    let mut plugins = Vec::new();
    let mut defs: Vec<PathBuf> = std::fs::read_dir(arroyo.join("defs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    defs.sort();
    for def in defs {
        let file = def.file_stem().unwrap().to_str().unwrap().to_string();
        let definition = std::fs::read_to_string(&def).unwrap();
        let (name, args, returns) = signature(&definition);
        assert_eq!(name, file, "{} defines {name}", def.display());

        // The header (with Arroyo's `{{ VAR }}` substituted) is the manifest's
        // dependencies but arroyo-udf-plugin, which Arroyo's API adds itself.
        let header = header_dependencies(&definition)
            .to_string()
            .replace("{{ TIDEMARK_UDFS_PATH }}", udfs.to_str().unwrap());
        let header = resolve_paths(toml::from_str(&header).unwrap(), udfs);
        let package = arroyo.join("plugins").join(&name);
        let manifest: toml::Table =
            toml::from_str(&std::fs::read_to_string(package.join("Cargo.toml")).unwrap()).unwrap();
        let mut deps = manifest["dependencies"].as_table().unwrap().clone();
        assert_eq!(
            deps.remove("arroyo-udf-plugin"),
            Some(toml::Value::String("0.2.0".into()))
        );
        assert_eq!(
            resolve_paths(deps, &package),
            header,
            "{name}: manifest vs header"
        );
        assert_eq!(
            manifest["lib"]["path"].as_str(),
            Some(format!("../../defs/{name}.rs").as_str())
        );

        let path = out.join(format!("libtidemark_arroyo_{name}.so"));
        // SAFETY: our own plugin, built above; its initialisers are Rust std's only.
        let library = unsafe { libloading::Library::new(&path) }.unwrap();
        // SAFETY: `__run` has this signature in every arroyo-udf-plugin 0.2 sync UDF.
        let run: Run = *unsafe { library.get::<Run>(b"__run") }.unwrap();
        plugins.push(Plugin {
            name,
            args,
            returns,
            run,
            _library: library,
        });
    }
    plugins
}

/// Row `i` of an answer as JSON, BOOLEAN as 1/0 when the plugin answers INT (see the
/// bool definitions: arroyo-udf-plugin 0.2 cannot return BOOLEAN).
fn value_at(array: &ArrayRef, i: usize, as_int: bool) -> Value {
    if array.is_null(i) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Utf8 => Value::from(array.as_string::<i32>().value(i)),
        DataType::Utf8View => Value::from(array.as_string_view().value(i)),
        DataType::UInt64 => Value::from(array.as_primitive::<UInt64Type>().value(i)),
        DataType::Float64 => Value::from(array.as_primitive::<Float64Type>().value(i)),
        DataType::Int32 => Value::from(array.as_primitive::<Int32Type>().value(i)),
        DataType::Boolean if as_int => Value::from(i32::from(array.as_boolean().value(i))),
        DataType::Boolean => Value::from(array.as_boolean().value(i)),
        other => panic!("unexpected answer type {other}"),
    }
}

/// Columns `a0, a1, …` of string views (what tidemark's tables hold).
fn columns(rows: &[Vec<Option<String>>], arity: usize) -> Vec<ArrayRef> {
    (0..arity)
        .map(|c| {
            let col: Vec<Option<&str>> = rows.iter().map(|r| r[c].as_deref()).collect();
            Arc::new(StringViewArray::from(col)) as ArrayRef
        })
        .collect()
}

/// The DataFusion UDF of the same name over the same columns, in row order.
async fn datafusion_answer(ctx: &SessionContext, name: &str, cols: &[ArrayRef]) -> ArrayRef {
    let fields: Vec<Field> = (0..cols.len())
        .map(|i| Field::new(format!("a{i}"), DataType::Utf8View, true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), cols.to_vec()).unwrap();
    let table = MemTable::try_new(schema, vec![vec![batch]]).unwrap();
    ctx.deregister_table("t").unwrap();
    ctx.register_table("t", Arc::new(table)).unwrap();
    let args: Vec<String> = (0..cols.len()).map(|i| format!("a{i}")).collect();
    let sql = format!("SELECT {name}({}) FROM t", args.join(", "));
    let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
    let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(0).as_ref()).collect();
    arrow::compute::concat(&parts).unwrap()
}

/// Deterministic inputs that reach every branch of the functions: platform names in
/// several spellings, JSON objects with typed values, arrays, broken JSON, empty, NULL as
/// first arguments; mostly the keys and items those documents hold as second ones.
fn generated_rows(n: usize, arity: usize) -> Vec<Vec<Option<String>>> {
    let some = |list: &[&str]| -> Vec<Option<String>> {
        list.iter()
            .map(|s| Some((*s).to_string()))
            .chain([None])
            .collect()
    };
    let first = some(&[
        "ios",
        " iPadOS ",
        "Android",
        "wear_os",
        "javascript",
        "web",
        "backend",
        "API",
        "windows",
        "",
        "{",
        "[1,",
        "null",
        "3",
        r#"{"plan":"gold","n":3.5,"ok":true,"langs":["en","de"]}"#,
        r#"{"plan":"free","n":-1,"ok":false,"langs":[]}"#,
        r#"{"plan":null,"n":"7","ok":"yes","x":{"plan":"nested"}}"#,
        r#"{"n":1e3,"ok":true,"plan":"a\"b"}"#,
        r#"["en","fr"]"#,
        r#"["de",1,null]"#,
        r#"["en"]"#,
    ]);
    let second = some(&[
        "plan", "n", "ok", "langs", "x", "en", "de", "fr", "missing", "",
    ]);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |len: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % len as u64) as usize
    };
    (0..n)
        .map(|_| {
            (0..arity)
                .map(|c| match c {
                    0 => first[next(first.len())].clone(),
                    _ if next(10) < 8 => second[next(second.len())].clone(),
                    _ => first[next(first.len())].clone(),
                })
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn arroyo_plugins_match_the_vectors_and_the_datafusion_udfs() {
    let plugins = load_plugins();
    let vectors = tidemark_udfs::vectors::load();
    let names: Vec<&str> = plugins.iter().map(|p| p.name.as_str()).collect();
    let expected: Vec<&str> = vectors.functions.keys().map(String::as_str).collect();
    assert_eq!(names, expected, "one plugin per UDF of vectors.json");

    let mut ctx = SessionContext::new();
    tidemark_udfs::register_all(&mut ctx).unwrap();
    let mut checked: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for plugin in &plugins {
        let name = plugin.name.as_str();
        let as_int = plugin.returns == DataType::Int32;
        let cases = &vectors.functions[name].cases;
        let arity = plugin.args.len();

        // The vectors, as one batch.
        let rows: Vec<Vec<Option<String>>> = cases.iter().map(|c| c.args.clone()).collect();
        let cols = columns(&rows, arity);
        let got = plugin.call(&cols);
        assert_eq!(got.data_type(), &plugin.returns, "{name}");
        assert_eq!(got.len(), cases.len(), "{name}");
        for (i, case) in cases.iter().enumerate() {
            let want = match &case.out {
                Value::Bool(b) if as_int => Value::from(i32::from(*b)),
                v => v.clone(),
            };
            assert_eq!(value_at(&got, i, as_int), want, "{name}{:?}", case.args);
        }

        // The vectors and generated rows (sliced: offsets cross the interface too), each
        // beside the DataFusion UDF.
        let generated = columns(&generated_rows(5000, arity), arity);
        let sliced: Vec<ArrayRef> = generated.iter().map(|c| c.slice(17, 4000)).collect();
        let mut non_null = 0;
        for batch in [cols, sliced] {
            let ours = plugin.call(&batch);
            let theirs = datafusion_answer(&ctx, name, &batch).await;
            assert_eq!(ours.len(), theirs.len(), "{name}");
            for i in 0..ours.len() {
                let a = value_at(&ours, i, as_int);
                let b = value_at(&theirs, i, as_int);
                assert_eq!(a, b, "{name} row {i}");
                non_null += usize::from(!a.is_null());
            }
            checked.entry(name).or_default().0 += ours.len();
        }
        checked.entry(name).or_default().1 = non_null;
        assert!(
            non_null > 0,
            "{name}: the generated rows reach non-NULL answers"
        );
    }
    assert_eq!(checked.len(), 7);
    eprintln!("rows checked per plugin (total, non-null): {checked:?}");
}
