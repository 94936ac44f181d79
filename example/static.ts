import { readFile, readdir } from 'node:fs/promises'
import { extname } from 'node:path'

// The page's few files, read once at startup, so no request can name a path
// outside example/public (no @fastify/static needed for three files).

const contentTypes: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8'
}

export interface StaticFile { body: Buffer, type: string }

export async function loadPublicFiles (): Promise<Map<string, StaticFile>> {
  const dir = new URL('./public/', import.meta.url)
  const files = new Map<string, StaticFile>()
  for (const name of await readdir(dir)) {
    const type = contentTypes[extname(name)]
    if (type !== undefined) files.set(name, { body: await readFile(new URL(name, dir)), type })
  }
  return files
}
