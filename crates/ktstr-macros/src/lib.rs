//! ktstr-macros: `#[ktstr_test]`.
//!
//! ```text
//! #[ktstr_test(scheduler = MY_SCHED, duration_s = 5, post_vm = check)]
//! fn my_test(ctx: &Ctx) -> anyhow::Result<AssertResult> { ... }
//! ```
//!
//! expands to an ordinary `#[test] fn my_test()` that calls
//! `__macro_support::run_test` of the `ktstr` facade (or of `ktstr-test` when
//! the calling crate depends only on that): on the host it boots a VM whose
//! initramfs carries this test binary; inside the guest the same binary,
//! started in guest mode, runs only the body.
//!
//! Mistakes are compile errors that name the fix: unknown or repeated
//! attributes, a wrong signature, and integer literals out of range
//! (a topology dimension of 0, a 0 s duration, less guest memory than a
//! kernel boots in). The UI tests in the root package's `tests/ui/` pin
//! the messages.

use proc_macro::TokenStream;
use proc_macro_crate::{FoundCrate, crate_name};
use quote::{format_ident, quote};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, ItemFn, Lit, Meta, MetaNameValue, Token, spanned::Spanned};

const KEYS: &[&str] = &[
    "scheduler",
    "extra_sched_args",
    "numa_nodes",
    "llcs",
    "cores",
    "threads",
    "memory_mb",
    "duration_s",
    "watchdog_timeout_s",
    "attach_timeout_s",
    "post_vm",
    "expect_err",
    "expect_scx_bpf_error_contains",
    "vmcore",
    "kernel",
    "auto_repro",
];

/// Smallest accepted value for integer-literal attributes; `None` = any.
fn min_value(key: &str) -> Option<(u64, &'static str)> {
    match key {
        "numa_nodes" | "llcs" | "cores" | "threads" => {
            Some((1, "a topology dimension must be at least 1"))
        }
        "memory_mb" => Some((
            128,
            "guest memory below 128 MiB does not boot the test kernel with its initramfs",
        )),
        "duration_s" => Some((1, "the scenario duration must be at least 1 s")),
        "watchdog_timeout_s" => Some((1, "the watchdog timeout must be at least 1 s")),
        "attach_timeout_s" => Some((1, "the attach timeout must be at least 1 s")),
        _ => None,
    }
}

/// Reject integer literals below a key's minimum or too large for the
/// field (`u32` for topology and memory, `u64` for times).
fn check_literal(key: &str, v: &Expr) -> syn::Result<()> {
    let Expr::Lit(ExprLit {
        lit: Lit::Int(i), ..
    }) = v
    else {
        return Ok(());
    };
    let Some((min, why)) = min_value(key) else {
        return Ok(());
    };
    let wide = matches!(
        key,
        "duration_s" | "watchdog_timeout_s" | "attach_timeout_s"
    );
    let n: u64 = i
        .base10_parse()
        .map_err(|_| syn::Error::new(i.span(), format!("`{key}` does not fit in a u64")))?;
    if !wide && n > u64::from(u32::MAX) {
        return Err(syn::Error::new(
            i.span(),
            format!("`{key}` = {n} does not fit in a u32"),
        ));
    }
    if n < min {
        return Err(syn::Error::new(i.span(), format!("`{key}` = {n}: {why}")));
    }
    Ok(())
}

/// The path of the crate whose `__macro_support` the expansion
/// calls: the `ktstr` facade when the caller depends on it (or is it: its
/// tests and examples reach it as `::ktstr`), else `ktstr-test`.
fn support_crate() -> syn::Result<proc_macro2::TokenStream> {
    match crate_name("ktstr") {
        Ok(FoundCrate::Itself) => return Ok(quote!(::ktstr)),
        Ok(FoundCrate::Name(n)) => {
            let id = format_ident!("{}", n);
            return Ok(quote!(::#id));
        }
        Err(_) => {}
    }
    match crate_name("ktstr-test") {
        Ok(FoundCrate::Itself) => Ok(quote!(crate)),
        Ok(FoundCrate::Name(n)) => {
            let id = format_ident!("{}", n);
            Ok(quote!(::#id))
        }
        Err(_) => Err(syn::Error::new(
            proc_macro2::Span::call_site(),
            "#[ktstr_test] needs the `ktstr` crate: add `ktstr` to this package's [dev-dependencies]",
        )),
    }
}

/// Mark a ktstr VM test. See the crate docs.
#[proc_macro_attribute]
pub fn ktstr_test(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item: proc_macro2::TokenStream = item.into();
    match expand(attr.into(), item.clone()) {
        Ok(t) => t.into(),
        // Keep the function (as dead code) beside the error so the only
        // diagnostic is ours, not a cascade of unused imports.
        Err(e) => {
            let e = e.to_compile_error();
            quote!(#e #[allow(dead_code)] #item).into()
        }
    }
}

/// Parse `key = value` pairs, naming the fix for a bare `key`.
fn parse_args(attr: proc_macro2::TokenStream) -> syn::Result<Vec<MetaNameValue>> {
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(attr)?;
    metas
        .into_iter()
        .map(|m| match m {
            Meta::NameValue(nv) => Ok(nv),
            Meta::Path(p) => {
                let k = p
                    .get_ident()
                    .map_or_else(|| "key".to_string(), |i| i.to_string());
                Err(syn::Error::new(
                    p.span(),
                    format!("`{k}` needs a value: write `{k} = ...` (e.g. `vmcore = true`)"),
                ))
            }
            Meta::List(l) => Err(syn::Error::new(
                l.path.span(),
                "expected `name = value`, not `name(...)`",
            )),
        })
        .collect()
}

fn expand(
    attr: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> syn::Result<proc_macro2::TokenStream> {
    let args = parse_args(attr)?;
    let func: ItemFn = syn::parse2(item)?;
    if func.sig.inputs.len() != 1 {
        let span = if func.sig.inputs.is_empty() {
            func.sig.paren_token.span.join()
        } else {
            func.sig.inputs.span()
        };
        return Err(syn::Error::new(
            span,
            "a #[ktstr_test] function takes exactly one argument: `ctx: &Ctx`",
        ));
    }
    if !func.sig.generics.params.is_empty() || func.sig.asyncness.is_some() {
        let span = func
            .sig
            .asyncness
            .map_or_else(|| func.sig.generics.span(), |a| a.span());
        return Err(syn::Error::new(
            span,
            "a #[ktstr_test] function cannot be generic or async",
        ));
    }
    let krate = support_crate()?;
    let mut fields = Vec::new();
    let (mut nodes, mut llcs, mut cores, mut threads) = (None, None, None, None);
    let mut seen = Vec::new();
    for a in args {
        let key = a
            .path
            .get_ident()
            .map(|i| i.to_string())
            .ok_or_else(|| syn::Error::new(a.path.span(), "expected `name = value`"))?;
        if !KEYS.contains(&key.as_str()) {
            let hint = KEYS
                .iter()
                .map(|k| (strsim::levenshtein(k, &key), *k))
                .filter(|(d, k)| *d <= 3 || k.starts_with(key.as_str()))
                .min()
                .map(|(_, k)| format!("did you mean `{k}`? "))
                .unwrap_or_default();
            return Err(syn::Error::new(
                a.path.span(),
                format!(
                    "unknown #[ktstr_test] attribute `{key}`; {hint}valid: {}",
                    KEYS.join(", ")
                ),
            ));
        }
        if seen.contains(&key) {
            return Err(syn::Error::new(
                a.path.span(),
                format!("`{key}` given twice"),
            ));
        }
        seen.push(key.clone());
        let v: Expr = a.value;
        check_literal(&key, &v)?;
        match key.as_str() {
            "scheduler" => fields.push(quote! { scheduler: ::core::option::Option::Some(#v), }),
            "extra_sched_args" => fields.push(quote! { extra_sched_args: &#v, }),
            "numa_nodes" => nodes = Some(v),
            "llcs" => llcs = Some(v),
            "cores" => cores = Some(v),
            "threads" => threads = Some(v),
            "memory_mb" => fields.push(quote! { memory_mb: #v, }),
            "duration_s" => fields.push(quote! { duration_s: #v, }),
            "watchdog_timeout_s" => fields.push(quote! { watchdog_timeout_s: #v, }),
            "attach_timeout_s" => fields.push(quote! { attach_timeout_s: #v, }),
            "post_vm" => fields.push(quote! { post_vm: ::core::option::Option::Some(#v), }),
            "expect_err" => fields.push(quote! { expect_err: #v, }),
            "expect_scx_bpf_error_contains" => fields
                .push(quote! { expect_scx_bpf_error_contains: ::core::option::Option::Some(#v), }),
            "vmcore" => fields.push(quote! { vmcore: #v, }),
            "kernel" => fields.push(quote! { kernel: ::core::option::Option::Some(#v), }),
            // Accepted for compatibility; automatic reproduction is not built yet.
            "auto_repro" => {
                fields.push(quote! {});
                let _: &Expr = &v;
            }
            _ => unreachable!("checked against KEYS"),
        }
    }
    if nodes.is_some() || llcs.is_some() || cores.is_some() || threads.is_some() {
        let n = nodes.map_or(quote!(1), |v| quote!(#v));
        let l = llcs.map_or(quote!(1), |v| quote!(#v));
        let c = cores.map_or(quote!(2), |v| quote!(#v));
        let t = threads.map_or(quote!(1), |v| quote!(#v));
        fields.push(quote! {
            topology: #krate::__macro_support::Topology { nodes: #n, llcs: #l, cores: #c, threads: #t },
        });
    }
    let name = func.sig.ident.clone();
    let body_name = format_ident!("__ktstr_body_{}", name);
    let mut body_fn = func.clone();
    body_fn.sig.ident = body_name.clone();
    let def_name = format_ident!("__KTSTR_DEF_{}", name);
    let attrs = &func.attrs;
    let vis = &func.vis;
    // The definition is a const outside the `#[test]` fn so its values
    // are type-checked in every build, not only under `cfg(test)`.
    Ok(quote! {
        #[allow(non_snake_case, dead_code)]
        #body_fn

        #[allow(non_upper_case_globals, dead_code)]
        #[doc(hidden)]
        const #def_name: #krate::__macro_support::TestDef = #krate::__macro_support::TestDef {
            name: ::core::stringify!(#name),
            module: ::core::module_path!(),
            body: #body_name,
            #(#fields)*
            ..#krate::__macro_support::TestDef::DEFAULT
        };

        #(#attrs)*
        #[test]
        #vis fn #name() {
            #krate::__macro_support::run_test(&#def_name);
        }
    })
}
