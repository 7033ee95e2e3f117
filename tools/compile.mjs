#!/usr/bin/env node
// Compiles Solidity sources with the npm `solc` package (standard JSON API, not the solcjs CLI)
// into one artifacts file: {ContractName: {abi, bytecode}}.
//
//   node tools/compile.mjs A.sol B.sol --out artifacts.json
//
// Imports of `@openzeppelin/contracts/...` resolve from .tools/node_modules; other imports
// resolve relative to the current directory. Exits non-zero with the compiler's errors on error.
// TXGATE_TOOLS_DIR overrides where the node tools live (default: <repo>/.tools).

import { createRequire } from "node:module";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const toolsDir = path.resolve(process.env.TXGATE_TOOLS_DIR ?? path.join(repoRoot, ".tools"));
const nodeModules = path.join(toolsDir, "node_modules");

function fail(message) {
  process.stderr.write(`compile.mjs: ${message}\n`);
  process.exit(1);
}

function parseArgs(argv) {
  const files = [];
  let out = null;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--out") {
      out = argv[++i];
    } else if (arg.startsWith("--out=")) {
      out = arg.slice("--out=".length);
    } else if (arg.startsWith("--")) {
      fail(`unknown option ${arg}`);
    } else {
      files.push(arg);
    }
  }
  if (!out) fail("missing --out <artifacts.json>");
  if (files.length === 0) fail("no .sol files given");
  return { files, out };
}

function loadSolc() {
  // Resolve from the tools directory, not from this script's location: tools/ has no node_modules.
  const require = createRequire(path.join(toolsDir, "package.json"));
  try {
    return require("solc");
  } catch (error) {
    fail(`cannot load solc from ${nodeModules} (run \`make setup\`): ${error.message}`);
  }
}

function findImports(importPath) {
  const candidates = importPath.startsWith("@")
    ? [path.join(nodeModules, importPath)]
    : [path.resolve(importPath), path.join(nodeModules, importPath)];
  for (const candidate of candidates) {
    if (existsSync(candidate)) return { contents: readFileSync(candidate, "utf8") };
  }
  return { error: `import not found: ${importPath}` };
}

function main() {
  const { files, out } = parseArgs(process.argv.slice(2));
  const solc = loadSolc();

  // Source unit names are paths relative to the working directory, so relative imports between
  // the given files resolve the same way the compiler normalises them.
  const sources = {};
  for (const file of files) {
    if (!existsSync(file)) fail(`no such file: ${file}`);
    const unit = path.relative(process.cwd(), path.resolve(file)).split(path.sep).join("/");
    sources[unit] = { content: readFileSync(file, "utf8") };
  }

  const input = {
    language: "Solidity",
    sources,
    settings: {
      optimizer: { enabled: true, runs: 200 },
      outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));

  const diagnostics = output.errors ?? [];
  const errors = diagnostics.filter((d) => d.severity === "error");
  for (const d of diagnostics.filter((d) => d.severity !== "error")) {
    process.stderr.write(d.formattedMessage ?? d.message);
  }
  if (errors.length > 0) {
    for (const d of errors) process.stderr.write(d.formattedMessage ?? `${d.message}\n`);
    fail(`${errors.length} compiler error(s)`);
  }

  // Only contracts defined in the given files: imported library contracts are not artifacts.
  const artifacts = {};
  for (const unit of Object.keys(sources)) {
    for (const [name, contract] of Object.entries(output.contracts?.[unit] ?? {})) {
      if (name in artifacts) fail(`contract ${name} is defined in more than one file`);
      artifacts[name] = { abi: contract.abi, bytecode: `0x${contract.evm.bytecode.object}` };
    }
  }

  mkdirSync(path.dirname(path.resolve(out)), { recursive: true });
  writeFileSync(out, `${JSON.stringify(artifacts, null, 2)}\n`);
}

main();
