// The first lines of a child script (runScript) in which `name` cannot be
// found, as in an app that never installed it: a resolve hook sends the
// package's specifier to a path that does not exist.
export function hidingPackage (name: string): string {
  return `
    import { register } from 'node:module'
    register('data:text/javascript,' + encodeURIComponent(\`
      export async function resolve (specifier, context, next) {
        if (specifier === ${JSON.stringify(name)}) return next('./no-such-dir/${name}/index.js', context)
        return next(specifier, context)
      }\`))
  `
}
