/**
 * The Python side of the test suite: pyarrow, the independent Parquet reader the Parquet tests
 * compare against (test/python-requirements.txt). `ensurePythonTestDeps` checks that
 * `python3 -c "import pyarrow"` works and otherwise installs the requirements with pip; where the
 * system Python refuses pip installs (PEP 668), it makes a virtual environment under the cache
 * directory instead. It returns the interpreter to use; tests read it from MILLRACE_PYTHON.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { StackContext } from "./types.ts";

const REQUIREMENTS = "test/python-requirements.txt";

function canImport(python: string): boolean {
  const res = spawnSync(python, ["-c", "import pyarrow"], { stdio: "ignore", timeout: 60_000 });
  return res.status === 0;
}

function pipInstall(ctx: StackContext, python: string): boolean {
  ctx.log(`python: installing ${REQUIREMENTS} with ${python} -m pip`);
  const res = spawnSync(python, ["-m", "pip", "install", "--disable-pip-version-check", "--quiet", "-r", join(ctx.root, REQUIREMENTS)], {
    stdio: ["ignore", "inherit", "inherit"],
    timeout: 15 * 60_000,
  });
  return res.status === 0 && canImport(python);
}

/** The Python interpreter that has pyarrow (installing it if needed), or throws with what to do. */
export function ensurePythonTestDeps(ctx: StackContext, python = process.env.MILLRACE_PYTHON ?? "python3"): string {
  if (canImport(python)) return python;
  if (pipInstall(ctx, python)) return python;
  const venv = join(ctx.cacheDir, "python-venv");
  const venvPython = join(venv, "bin", "python");
  if (!existsSync(venvPython)) {
    ctx.log(`python: creating a virtual environment in ${venv}`);
    const res = spawnSync(python, ["-m", "venv", venv], { stdio: "inherit", timeout: 5 * 60_000 });
    if (res.status !== 0) throw new Error(`python: could not install pyarrow nor create ${venv}; install it yourself: python3 -m pip install -r ${REQUIREMENTS}`);
  }
  if (canImport(venvPython) || pipInstall(ctx, venvPython)) return venvPython;
  throw new Error(`python: pyarrow could not be installed; install it yourself: python3 -m pip install -r ${REQUIREMENTS}`);
}
