import { readFile, readdir } from 'node:fs/promises'
import ts from 'typescript'

// Serves lib/client as browser ES modules with no build step: every file is
// transpiled once at startup (types stripped, nothing bundled). The client's
// relative imports carry '.js', so the browser resolves them against /client/
// by itself. The output is what `npm run build` writes to dist/client, which
// is what an app of its own would serve or bundle.

const clientDir = new URL('../lib/client/', import.meta.url)

/** The client's modules as JavaScript, by name ('index.js'). */
export async function clientModules (): Promise<Map<string, string>> {
  const modules = new Map<string, string>()
  for (const file of await readdir(clientDir)) {
    if (!file.endsWith('.ts')) continue
    const name = file.replace(/\.ts$/, '.js')
    const source = await readFile(new URL(file, clientDir), 'utf8')
    modules.set(name, ts.transpileModule(source, {
      fileName: file,
      compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext, verbatimModuleSyntax: true }
    }).outputText)
  }
  return modules
}
