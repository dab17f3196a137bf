//! ktstr-macros: `#[ktstr_test]`.
//!
//! ```ignore
//! #[ktstr_test(scheduler = MY_SCHED, duration_s = 5, post_vm = check)]
//! fn my_test(ctx: &Ctx) -> anyhow::Result<AssertResult> { ... }
//! ```
//!
//! expands to an ordinary `#[test] fn my_test()` that calls
//! `ktstr_test::test_support::run_test`: on the host it boots a VM whose
//! initramfs carries this test binary; inside the guest the same binary,
//! started in guest mode, runs only the body.

use proc_macro::TokenStream;
use quote::{format_ident, quote};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ItemFn, MetaNameValue, Token, spanned::Spanned};

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
    "post_vm",
    "expect_err",
    "expect_scx_bpf_error_contains",
    "vmcore",
    "kernel",
    "auto_repro",
];

/// Mark a ktstr VM test. See the crate docs.
#[proc_macro_attribute]
pub fn ktstr_test(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand(attr.into(), item.into()) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(
    attr: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> syn::Result<proc_macro2::TokenStream> {
    let args = Punctuated::<MetaNameValue, Token![,]>::parse_terminated.parse2(attr)?;
    let func: ItemFn = syn::parse2(item)?;
    if func.sig.inputs.len() != 1 {
        return Err(syn::Error::new(
            func.sig.inputs.span(),
            "a #[ktstr_test] function takes exactly one argument: `ctx: &Ctx`",
        ));
    }
    if !func.sig.generics.params.is_empty() || func.sig.asyncness.is_some() {
        return Err(syn::Error::new(
            func.sig.span(),
            "a #[ktstr_test] function cannot be generic or async",
        ));
    }
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
            return Err(syn::Error::new(
                a.path.span(),
                format!(
                    "unknown #[ktstr_test] attribute `{key}`; valid: {}",
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
            topology: ::ktstr_test::prelude::Topology { nodes: #n, llcs: #l, cores: #c, threads: #t },
        });
    }
    let name = func.sig.ident.clone();
    let body_name = format_ident!("__ktstr_body_{}", name);
    let mut body_fn = func.clone();
    body_fn.sig.ident = body_name.clone();
    let attrs = &func.attrs;
    let vis = &func.vis;
    Ok(quote! {
        #[allow(non_snake_case, dead_code)]
        #body_fn

        #(#attrs)*
        #[test]
        #vis fn #name() {
            ::ktstr_test::test_support::run_test(&::ktstr_test::test_support::TestDef {
                name: ::core::stringify!(#name),
                module: ::core::module_path!(),
                body: #body_name,
                #(#fields)*
                ..::ktstr_test::test_support::TestDef::DEFAULT
            });
        }
    })
}
