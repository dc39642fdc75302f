/**
 * Holds responses to docs/openapi.yaml: finds the operation a request went to, the documented response for its
 * status, and checks the content type, the required headers and the body against that response's schema
 * (JSON Schema 2020-12, as OpenAPI 3.1 defines it, with the document's own $refs).
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { parse } from 'yaml';
import { request, type JsonResponse } from './harness.ts';

export const OPENAPI_PATH = fileURLToPath(new URL('../../docs/openapi.yaml', import.meta.url));

type Json = Record<string, unknown>;
interface ResponseObject { description: string; headers?: Record<string, { required?: boolean; schema?: Json; $ref?: string }>; content?: Record<string, { schema?: Json }> }

export const openapi: Json & { paths: Record<string, Record<string, Json>>; components: Json & { schemas: Record<string, Json>; responses: Record<string, ResponseObject> } } =
  parse(readFileSync(OPENAPI_PATH, 'utf8'));

const DOCUMENT_ID = 'https://coupon.invalid/openapi.json';
const ajv = new Ajv2020({ strict: false, allErrors: true, validateSchema: false });
(addFormatsModule as unknown as { default: (ajv: Ajv2020) => void }).default(ajv);
ajv.addSchema({ ...openapi, $id: DOCUMENT_ID });
const compiled = new Map<string, ValidateFunction>();

const pointer = (...parts: string[]): string => `#/${parts.map((part) => part.replaceAll('~', '~0').replaceAll('/', '~1')).join('/')}`;

/** A validator for the schema at a JSON pointer of the document (e.g. `#/components/schemas/Event`). */
export function schemaAt(ref: string): ValidateFunction {
  let validate = compiled.get(ref);
  if (!validate) compiled.set(ref, (validate = ajv.compile({ $ref: `${DOCUMENT_ID}${ref}` })));
  return validate;
}

function resolve<T>(value: T | { $ref: string }): T {
  let current: unknown = value;
  while (current && typeof current === 'object' && '$ref' in current) {
    const parts = (current as { $ref: string }).$ref.replace(/^#\//, '').split('/').map((part) => part.replaceAll('~1', '/').replaceAll('~0', '~'));
    current = parts.reduce<unknown>((node, part) => (node as Json)[part], openapi);
  }
  return current as T;
}

/** The path template of the document that a concrete path matches, or undefined. */
export function matchPath(path: string): string | undefined {
  return Object.keys(openapi.paths).find((template) => {
    const regex = new RegExp(`^${template.replace(/\{[^}]+\}/g, '[^/]+')}$`);
    return regex.test(path);
  });
}

export interface Documented { where: string; response: ResponseObject }

/**
 * The documented response for a request: the operation's response for the status; for a path no route has,
 * the `NotFound` response; for a method the path does not have, `MethodNotAllowed`.
 */
export function documentedResponse(method: string, path: string, status: number): Documented {
  const template = matchPath(path);
  if (!template) {
    if (status !== 404) throw new Error(`${method} ${path}: no documented path, yet the status is ${status} (undocumented routes answer 404)`);
    return { where: '#/components/responses/NotFound', response: resolve(openapi.components.responses.NotFound!) };
  }
  const operation = openapi.paths[template]![method.toLowerCase()] as { responses: Record<string, ResponseObject> } | undefined;
  if (!operation) {
    if (status !== 405) throw new Error(`${method} ${template}: no such operation, yet the status is ${status} (should be 405)`);
    return { where: '#/components/responses/MethodNotAllowed', response: resolve(openapi.components.responses.MethodNotAllowed!) };
  }
  const key = [String(status), `${String(status)[0]}XX`, 'default'].find((candidate) => candidate in operation.responses);
  if (!key) throw new Error(`${method} ${template} documents no ${status} response (documented: ${Object.keys(operation.responses).join(', ')})`);
  const responseRef = operation.responses[key] as ResponseObject | { $ref: string };
  const where = '$ref' in responseRef ? responseRef.$ref : pointer('paths', template, method.toLowerCase(), 'responses', key);
  return { where, response: resolve(responseRef) };
}

/** Throws, naming the operation and the problem, unless the response is what docs/openapi.yaml documents. */
export function assertDocumented(method: string, url: string, response: { status: number; headers: Headers; body: unknown }): void {
  const path = new URL(url).pathname;
  const { where, response: documented } = documentedResponse(method, path, response.status);
  const what = `${method} ${path} -> ${response.status}`;
  for (const [name, header] of Object.entries(documented.headers ?? {})) {
    const value = response.headers.get(name);
    if (value === null) {
      if (resolve(header).required) throw new Error(`${what}: the required header ${name} is missing`);
      continue;
    }
    const schema = resolve(header).schema;
    if (schema && !ajv.validate(schema, value)) throw new Error(`${what}: header ${name}=${value} ${ajv.errorsText()}`);
  }
  const contentType = response.headers.get('content-type')?.split(';')[0]?.trim();
  const content = documented.content ?? {};
  if (Object.keys(content).length === 0) {
    if (response.body !== '' && response.body !== undefined) throw new Error(`${what}: a body where none is documented`);
    return;
  }
  if (!contentType || !(contentType in content)) {
    throw new Error(`${what}: content type ${contentType} is not one of ${Object.keys(content).join(', ')}`);
  }
  const media = content[contentType]!;
  if (!media.schema) return;
  const schemaRef = `${where}/content/${contentType.replace('/', '~1')}/schema`;
  const validate = schemaAt(schemaRef);
  if (!validate(response.body)) {
    throw new Error(`${what}: the body does not match ${schemaRef}: ${ajv.errorsText(validate.errors)}\nbody: ${JSON.stringify(response.body)}`);
  }
}

/** harness.request, plus: the response must be the one docs/openapi.yaml documents for it. */
export async function call<T = Record<string, unknown>>(
  url: string, init: { method?: string; body?: unknown; token?: string; headers?: Record<string, string> } = {},
): Promise<JsonResponse<T>> {
  const method = init.method ?? (init.body === undefined ? 'GET' : 'POST');
  const response = await request<T>(url, { ...init, method });
  assertDocumented(method, url, response);
  return response;
}
