use ktstr::assert::AssertResult;
use ktstr::ktstr_test;
use ktstr::scenario::Ctx;

#[ktstr_test(vmcore)]
fn flag_without_value(_ctx: &Ctx) -> anyhow::Result<AssertResult> {
    Ok(AssertResult::pass())
}

fn main() {}
