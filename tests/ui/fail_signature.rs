use ktstr::assert::AssertResult;
use ktstr::ktstr_test;
use ktstr::scenario::Ctx;

#[ktstr_test]
fn no_ctx() -> anyhow::Result<AssertResult> {
    Ok(AssertResult::pass())
}

#[ktstr_test]
fn generic<T>(_ctx: &Ctx) -> anyhow::Result<AssertResult> {
    Ok(AssertResult::pass())
}

fn main() {}
