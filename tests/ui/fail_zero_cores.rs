use ktstr::assert::AssertResult;
use ktstr::ktstr_test;
use ktstr::scenario::Ctx;

#[ktstr_test(cores = 0)]
fn no_cpus(_ctx: &Ctx) -> anyhow::Result<AssertResult> {
    Ok(AssertResult::pass())
}

fn main() {}
