use ktstr::assert::AssertResult;
use ktstr::ktstr_test;
use ktstr::scenario::Ctx;

#[ktstr_test(duration_s = 0)]
fn instant(_ctx: &Ctx) -> anyhow::Result<AssertResult> {
    Ok(AssertResult::pass())
}

fn main() {}
