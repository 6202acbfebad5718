//! Code generation: turns an annotated function's body into guard, then execute.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{ToTokens as _, quote, quote_spanned};
use syn::ext::IdentExt as _;
use syn::spanned::Spanned as _;
use syn::visit_mut::VisitMut;
use syn::{
    Block, Expr, ExprAsync, FnArg, GenericArgument, Ident, ItemFn, LitStr, Pat, PathArguments,
    ReturnType, Stmt, Type, TypeParamBound, parse_quote, parse_quote_spanned,
};

use crate::options::Options;

/// One argument that can become an action parameter.
struct Arg {
    ident: Ident,
    /// The JSON key: the identifier without `r#`.
    name: String,
}

/// Where the body to guard lives.
enum Shape {
    /// A plain `async fn`: the whole block.
    Async,
    /// A method already rewritten by `#[async_trait]`: the block of the `async move` inside
    /// `Box::pin(..)`.
    AsyncTrait,
}

pub(crate) fn expand(options: Options, mut func: ItemFn) -> syn::Result<TokenStream> {
    let (shape, ret) = shape_of(&func)?;
    let krate: syn::Path = options
        .krate
        .clone()
        .unwrap_or_else(|| parse_quote!(::approvals_core));
    let fn_name = func.sig.ident.unraw().to_string();

    let mut args = Vec::new();
    for input in &func.sig.inputs {
        if let FnArg::Typed(typed) = input {
            collect_idents(&typed.pat, &mut args);
        }
    }

    // skip(..) must name arguments.
    let mut skipped = Vec::new();
    for ident in &options.skip {
        let name = ident.unraw().to_string();
        if name == "self" {
            return Err(syn::Error::new(
                ident.span(),
                "`self` is never sent to reviewers; remove it from skip(..)",
            ));
        }
        if !args.iter().any(|a| a.name == name) {
            return Err(syn::Error::new(
                ident.span(),
                format!(
                    "skip({name}): `{fn_name}` has no argument `{name}`{}",
                    list_args(&args)
                ),
            ));
        }
        skipped.push(name);
    }

    // `justification = arg`, `gate = arg` and `context = arg` use that argument for
    // themselves: it is not repeated as a parameter.
    let arg_named = |expr: Option<&Expr>| match expr {
        Some(Expr::Path(p)) if p.qself.is_none() && p.attrs.is_empty() => p
            .path
            .get_ident()
            .map(|i| i.unraw().to_string())
            .filter(|name| args.iter().any(|a| &a.name == name)),
        _ => None,
    };
    let own_args = [
        arg_named(options.justification.as_ref()),
        arg_named(options.gate.as_ref()),
        arg_named(options.context.as_ref()),
    ];

    let kind = match &options.kind {
        Some(kind) if kind.value().trim().is_empty() => {
            return Err(syn::Error::new(
                kind.span(),
                "`kind` must not be empty; use a dotted name such as \"db.drop\"",
            ));
        }
        Some(kind) => kind.to_token_stream(),
        None => quote!(::core::concat!(::core::module_path!(), "::", #fn_name)),
    };
    let resource = match &options.resource {
        Some(template) => resource(template, &args, &skipped, &fn_name)?,
        None => quote!(::std::string::String::new()),
    };

    let gate = match &options.gate {
        Some(expr) => quote_spanned!(expr.span()=> #krate::__private::gate(&(#expr))),
        None => quote!(#krate::__private::default_gate()),
    };

    let params = args
        .iter()
        .filter(|a| !skipped.contains(&a.name) && !own_args.contains(&Some(a.name.clone())))
        .map(|Arg { ident, name }| {
            quote_spanned! {ident.span()=>
                #krate::__private::Params::add(&mut __approvals_params, #name, &#ident);
            }
        })
        .collect::<Vec<_>>();
    let justification = options.justification.as_ref().map(|expr| {
        quote_spanned! {expr.span()=>
            #krate::__private::set_justification(
                &mut __approvals_request,
                #krate::__private::justification(&(#expr)),
            );
        }
    });
    let context = options.context.as_ref().map(|expr| {
        quote_spanned! {expr.span()=>
            #krate::__private::set_context(&mut __approvals_request, #expr);
        }
    });

    let mut ret_infer = ret.clone();
    ImplTraitToInfer.visit_type_mut(&mut ret_infer);
    // Everything that needs the return type to be an approval result is spanned at its first
    // token, so a wrong return type is reported there, once.
    let ret_span = ret.span();
    let ret_infer = respan(ret_infer.into_token_stream(), ret_span);
    let krate_at_ret = respan(krate.to_token_stream(), ret_span);
    let private = quote_spanned!(ret_span=> #krate_at_ret::__private);

    let guarded = |body: &Block| -> Block {
        // Guard and execute inline (no extra future around the gate's), so the annotated
        // function costs what the hand-written calls cost.
        let call = quote_spanned! {ret_span=>
            let (__approvals_gate, __approvals_request) =
                match #private::prepare::<#ret_infer>(__approvals_gate, __approvals_request) {
                    ::core::result::Result::Ok(ready) => ready,
                    ::core::result::Result::Err(refused) => return refused,
                };
            let __approvals_grant = match __approvals_gate.guard(&__approvals_request).await {
                ::core::result::Result::Ok(grant) => grant,
                ::core::result::Result::Err(e) => return #private::refused::<#ret_infer>(e),
            };
            <#ret_infer as #private::ApprovalResult>::execute(
                &__approvals_gate,
                __approvals_grant,
                &__approvals_request,
                move || #private::body::<#ret_infer, _>(async move #body),
            )
            .await
        };
        let stmts = quote! {
            let __approvals_gate = #gate;
            #[allow(unused_mut)]
            let mut __approvals_params = #krate::__private::Params::new();
            #(#params)*
            #[allow(unused_mut)]
            let mut __approvals_request =
                #krate::__private::Params::into_request(__approvals_params, #kind, #resource);
            #justification
            #context
            #call
        };
        parse_quote_spanned!(ret_span=> { #stmts })
    };

    match shape {
        Shape::Async => {
            let block = guarded(&func.block);
            *func.block = block;
        }
        Shape::AsyncTrait => {
            // `shape_of` found it.
            if let Some(inner) = async_trait_block(&mut func.block) {
                let block = guarded(&inner.block);
                inner.block = block;
            }
        }
    }
    Ok(func.into_token_stream())
}

/// Whether the function is `async fn` or an `#[async_trait]` method, and its `Result` type.
fn shape_of(func: &ItemFn) -> syn::Result<(Shape, Type)> {
    let sig = &func.sig;
    if sig.asyncness.is_some() {
        return match &sig.output {
            ReturnType::Type(_, ty) => Ok((Shape::Async, (**ty).clone())),
            ReturnType::Default => Err(syn::Error::new(
                sig.paren_token.span.close(),
                format!(
                    "`{}` returns nothing, but #[requires_approval] needs `-> Result<T, E>` where \
                     `E: From<approvals_core::GuardError>`: a refused approval is returned as the error",
                    sig.ident
                ),
            )),
        };
    }
    // `#[async_trait]` on the impl ran first: `fn f(..) -> Pin<Box<dyn Future<Output = R> +
    // Send + 'async_trait>> { Box::pin(async move { .. }) }`.
    let mut block = func.block.clone();
    if let ReturnType::Type(_, ty) = &sig.output
        && let Some(output) = boxed_future_output(ty)
        && async_trait_block(&mut block).is_some()
    {
        return Ok((Shape::AsyncTrait, output));
    }
    Err(not_async(func))
}

fn not_async(func: &ItemFn) -> syn::Error {
    syn::Error::new(
        func.sig.fn_token.span,
        format!(
            "#[requires_approval] needs an `async fn`: `{}` must wait for reviewers before its body runs. \
             Write `async fn {}(..)`",
            func.sig.ident, func.sig.ident
        ),
    )
}

/// The `async move { .. }` in a block that is exactly `Box::pin(async move { .. })`.
fn async_trait_block(block: &mut Block) -> Option<&mut ExprAsync> {
    let [Stmt::Expr(Expr::Call(call), None)] = block.stmts.as_mut_slice() else {
        return None;
    };
    let Expr::Path(callee) = &*call.func else {
        return None;
    };
    let segments: Vec<String> = callee
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    if !segments.ends_with(&["Box".to_owned(), "pin".to_owned()]) || call.args.len() != 1 {
        return None;
    }
    match call.args.first_mut() {
        Some(Expr::Async(inner)) if inner.capture.is_some() => Some(inner),
        _ => None,
    }
}

/// `R` in `Pin<Box<dyn Future<Output = R> + ..>>`.
fn boxed_future_output(ty: &Type) -> Option<Type> {
    let pin = last_generic(ty, "Pin")?;
    let boxed = last_generic(pin, "Box")?;
    let Type::TraitObject(object) = boxed else {
        return None;
    };
    object.bounds.iter().find_map(|bound| {
        let TypeParamBound::Trait(t) = bound else {
            return None;
        };
        let last = t.path.segments.last()?;
        if last.ident != "Future" {
            return None;
        }
        let PathArguments::AngleBracketed(args) = &last.arguments else {
            return None;
        };
        args.args.iter().find_map(|arg| match arg {
            GenericArgument::AssocType(assoc) if assoc.ident == "Output" => Some(assoc.ty.clone()),
            _ => None,
        })
    })
}

/// The single type argument of a path type whose last segment is `name`.
fn last_generic<'a>(ty: &'a Type, name: &str) -> Option<&'a Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != name {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    args.args.iter().find_map(|arg| match arg {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    })
}

/// The identifiers a parameter pattern binds (`x`, `(a, b)`, `Point { x, y }`, ..).
fn collect_idents(pat: &Pat, out: &mut Vec<Arg>) {
    match pat {
        Pat::Ident(p) => {
            out.push(Arg {
                ident: p.ident.clone(),
                name: p.ident.unraw().to_string(),
            });
            if let Some((_, sub)) = &p.subpat {
                collect_idents(sub, out);
            }
        }
        Pat::Tuple(t) => t.elems.iter().for_each(|p| collect_idents(p, out)),
        Pat::TupleStruct(t) => t.elems.iter().for_each(|p| collect_idents(p, out)),
        Pat::Struct(s) => s.fields.iter().for_each(|f| collect_idents(&f.pat, out)),
        Pat::Slice(s) => s.elems.iter().for_each(|p| collect_idents(p, out)),
        Pat::Reference(r) => collect_idents(&r.pat, out),
        Pat::Type(t) => collect_idents(&t.pat, out),
        Pat::Paren(p) => collect_idents(&p.pat, out),
        // `_` binds nothing; nothing to send.
        _ => {}
    }
}

fn list_args(args: &[Arg]) -> String {
    if args.is_empty() {
        return " (it takes none besides `self`)".to_owned();
    }
    let names: Vec<String> = args.iter().map(|a| format!("`{}`", a.name)).collect();
    format!("; its arguments are {}", names.join(", "))
}

/// `resource = "db://{db}/{table}"`: checks each `{name}` and formats with the arguments.
fn resource(
    template: &LitStr,
    args: &[Arg],
    skipped: &[String],
    fn_name: &str,
) -> syn::Result<TokenStream> {
    let text = template.value();
    let mut rest = text.as_str();
    let mut placeholders = 0;
    while let Some(open) = rest.find(['{', '}']) {
        let after = &rest[open + 1..];
        if rest[open..].starts_with("{{") || rest[open..].starts_with("}}") {
            rest = &after[1..];
            continue;
        }
        if rest[open..].starts_with('}') {
            return Err(syn::Error::new(
                template.span(),
                "unmatched `}` in `resource`; write `}}` for a literal brace",
            ));
        }
        let Some(close) = after.find('}') else {
            return Err(syn::Error::new(
                template.span(),
                "unclosed `{` in `resource`; write `{{` for a literal brace",
            ));
        };
        let inner = &after[..close];
        let name = inner.split(':').next().unwrap_or_default().trim();
        if name.is_empty() || !name.chars().all(|c| c == '_' || c.is_alphanumeric()) {
            return Err(syn::Error::new(
                template.span(),
                format!(
                    "`{{{inner}}}` in `resource`: placeholders name an argument, as in `{{table}}`{}",
                    list_args(args)
                ),
            ));
        }
        if !args.iter().any(|a| a.name == name) {
            return Err(syn::Error::new(
                template.span(),
                format!(
                    "`{{{name}}}` in `resource`: `{fn_name}` has no argument `{name}`{}",
                    list_args(args)
                ),
            ));
        }
        if skipped.iter().any(|s| s == name) {
            return Err(syn::Error::new(
                template.span(),
                format!(
                    "`{{{name}}}` in `resource` uses a skipped argument; reviewers see the resource, \
                     so it cannot contain `{name}`. Remove it from skip(..) or from the resource"
                ),
            ));
        }
        placeholders += 1;
        rest = &after[close + 1..];
    }
    Ok(if placeholders == 0 {
        quote!(::std::string::String::from(#template))
    } else {
        // Implicit capture: the literal's span resolves the names among the arguments.
        quote!(::std::format!(#template))
    })
}

/// `tokens` with every span set to `span`.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tree| {
            if let TokenTree::Group(group) = &tree {
                let mut inner = Group::new(group.delimiter(), respan(group.stream(), span));
                inner.set_span(span);
                tree = TokenTree::Group(inner);
            } else {
                tree.set_span(span);
            }
            tree
        })
        .collect()
}

/// Replaces `impl Trait` by `_` so the return type can be named in a turbofish.
struct ImplTraitToInfer;

impl VisitMut for ImplTraitToInfer {
    fn visit_type_mut(&mut self, ty: &mut Type) {
        if let Type::ImplTrait(_) = ty {
            *ty = Type::Infer(syn::TypeInfer {
                underscore_token: syn::Token![_](Span::call_site()),
            });
        } else {
            syn::visit_mut::visit_type_mut(self, ty);
        }
    }
}
