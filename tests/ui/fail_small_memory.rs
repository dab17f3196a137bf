use ktstr::assert::AssertResult;
use ktstr::ktstr_test;
use ktstr::scenario::Ctx;

#[ktstr_test(memory_mb = 64)]
fn tiny(_ctx: &Ctx) -> anyhow::Result<AssertResult> {
    Ok(AssertResult::pass())
}

fn main() {}
