/**
 * topology.yaml parsed with its positions kept: the plain value to validate, the syntax errors, and
 * a way back from a path (`["sinks", "timescale", "batch", "max_rows"]`) to a 1-based line/column.
 */
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node } from "yaml";

export type YamlPath = readonly (string | number)[];

/** `value`: the value at the path; `key`: the key naming it (for an unknown key). */
export type Anchor = "value" | "key";

export interface Position {
  line: number;
  column: number;
}

export interface SyntaxProblem extends Position {
  message: string;
}

export interface YamlSource {
  value: unknown;
  syntaxErrors: SyntaxProblem[];
  /** Whether the path exists in the document. */
  has(path: YamlPath): boolean;
  /**
   * Where the path is. When it does not exist (a missing key), the deepest part that does: the key
   * of the parent mapping, e.g. the `batch:` line for a missing `batch.max_rows`.
   */
  locate(path: YamlPath, anchor?: Anchor): Position;
}

export function parseYamlSource(text: string): YamlSource {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: true, uniqueKeys: true });
  const pos = (offset: number): Position => {
    const p = lineCounter.linePos(offset);
    return { line: p.line, column: p.col };
  };
  const syntaxErrors = doc.errors.map((e) => {
    const at = e.linePos?.[0];
    // prettyErrors appends " at line L, column C:" and a source excerpt; the position is kept separately.
    const message = e.message.split("\n")[0]!.replace(/ at line \d+, column \d+:?$/, "");
    return at ? { line: at.line, column: at.col, message } : { ...pos(e.pos[0]), message };
  });
  const walk = (path: YamlPath) => walkPath(doc, path);
  return {
    value: doc.errors.length === 0 ? doc.toJS({ maxAliasCount: 100 }) : undefined,
    syntaxErrors,
    has: (path) => walk(path).found,
    locate(path, anchor = "value") {
      const w = walk(path);
      const node = w.found && anchor === "value" ? (w.value ?? w.key) : w.key;
      const range = node?.range ?? doc.contents?.range;
      return range ? pos(range[0]) : { line: 1, column: 1 };
    },
  };
}

interface Walk {
  found: boolean;
  /** The key (or sequence item) of the last step that matched. */
  key: Node | undefined;
  value: Node | undefined;
}

function walkPath(doc: Document, path: YamlPath): Walk {
  let node: Node | undefined = (doc.contents as Node | null) ?? undefined;
  let key: Node | undefined;
  for (const seg of path) {
    if (node && isAlias(node)) node = (node.resolve(doc) as Node | undefined) ?? undefined;
    if (isMap(node)) {
      const pair = node.items.find((p) => (isScalar(p.key) ? p.key.value : p.key) === seg);
      if (!pair) return { found: false, key, value: undefined };
      key = pair.key as Node;
      node = (pair.value as Node | null) ?? undefined;
    } else if (isSeq(node) && typeof seg === "number" && seg < node.items.length) {
      node = node.items[seg] as Node;
      key = node;
    } else {
      return { found: false, key, value: undefined };
    }
  }
  return { found: true, key, value: node };
}
