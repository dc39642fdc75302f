/**
 * docs/openapi.yaml itself: a valid OpenAPI 3.1 document whose request schemas are the ones the server
 * validates with and whose error codes and statuses are the server's table, so neither can drift.
 */
import { Validator } from '@seriousme/openapi-schema-validator';
import { ERROR_STATUS } from '../../src/api/errors.ts';
import { applyBody, createEventBody, updateEventBody } from '../../src/api/schemas.ts';
import { EVENT_ID_PATTERN, USER_ID_PATTERN } from '../../src/domain/coupon.ts';
import { openapi, schemaAt } from '../support/openapi.ts';

type Json = Record<string, unknown>;
const schemas = openapi.components.schemas;

test('when docs/openapi.yaml is checked against the OpenAPI 3.1 schema, then it is valid', async () => {
  const result = await new Validator().validate(structuredClone(openapi));
  expect(result.errors).toBeUndefined();
  expect(result.valid).toBe(true);
  expect(openapi.openapi).toMatch(/^3\.1\./);
});

test('when a document breaks the OpenAPI schema, then the validator used above notices', async () => {
  const broken = structuredClone(openapi) as unknown as { paths: Record<string, Record<string, { responses: Record<string, Json> }>> };
  delete broken.paths['/healthz']!.get!.responses['200']!.description;
  expect((await new Validator().validate(broken)).valid).toBe(false);
});

test.each([
  ['CreateEventBody', createEventBody],
  ['UpdateEventBody', updateEventBody],
  ['ApplyBody', applyBody],
])('when the request schema %s is compared with src/api/schemas.ts, then they are equal', (name, schema) => {
  expect(schemas[name]).toEqual(schema);
});

test('when the operations name their request bodies, then each uses the shared schema', () => {
  const bodyOf = (path: string, method: string) =>
    ((openapi.paths[path]![method] as { requestBody: { content: Record<string, { schema: Json }> } }).requestBody.content['application/json']!.schema);
  expect(bodyOf('/v1/events', 'post')).toEqual({ $ref: '#/components/schemas/CreateEventBody' });
  expect(bodyOf('/v1/events/{eventId}', 'patch')).toEqual({ $ref: '#/components/schemas/UpdateEventBody' });
  expect(bodyOf('/v1/events/{eventId}/apply', 'post')).toEqual({ $ref: '#/components/schemas/ApplyBody' });
});

test('when the path parameters are compared with the domain, then they use the same patterns', () => {
  const parameters = openapi.components.parameters as Record<string, { schema: { pattern: string } }>;
  expect(parameters.eventId!.schema.pattern).toBe(EVENT_ID_PATTERN);
  expect(parameters.userId!.schema.pattern).toBe(USER_ID_PATTERN);
});

test('when the error codes are compared with src/api/errors.ts, then the document has exactly the server codes', () => {
  const codes = ((schemas.Error as { properties: { error: { enum: string[] } } }).properties.error.enum);
  expect([...codes].sort()).toEqual(Object.keys(ERROR_STATUS).sort());
});

test('when a response documents an error code, then its status is the one the server answers that code with', () => {
  const mismatches: string[] = [];
  const codesOf = (schema: Json): string[] => {
    const part = (schema.allOf as Json[] | undefined)?.[1] as { properties?: { error?: { const?: string; enum?: string[] } } } | undefined;
    const error = part?.properties?.error;
    return error?.const !== undefined ? [error.const] : error?.enum ?? [];
  };
  const resolveRef = (node: Json): Json => {
    let current = node;
    while (typeof current.$ref === 'string') {
      current = (current.$ref as string).slice(2).split('/').reduce<Json>((at, key) => at[key] as Json, openapi);
    }
    return current;
  };
  let checked = 0;
  for (const [path, item] of Object.entries(openapi.paths)) {
    for (const [method, operation] of Object.entries(item)) {
      if (method === 'parameters' || method === 'servers') continue;
      for (const [status, response] of Object.entries((operation as { responses: Record<string, Json> }).responses)) {
        const media = (resolveRef(response).content as Record<string, { schema: Json }> | undefined)?.['application/json'];
        if (!media || Number(status) < 400) continue;
        for (const code of codesOf(resolveRef(media.schema))) {
          checked += 1;
          if (ERROR_STATUS[code as keyof typeof ERROR_STATUS] !== Number(status)) mismatches.push(`${method} ${path} ${status}: ${code}`);
        }
      }
    }
  }
  expect(mismatches).toEqual([]);
  expect(checked).toBeGreaterThan(20);
});

test('when the example bodies of the document are validated, then they match their schemas', () => {
  const validate = schemaAt('#/components/schemas/CreateEventBody');
  const example = (openapi.paths['/v1/events']!.post as { requestBody: { content: Record<string, { example: unknown }> } })
    .requestBody.content['application/json']!.example;
  expect(validate(example)).toBe(true);
});
