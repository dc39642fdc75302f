import { Ajv, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { EVENT_ID_PATTERN, MAX_TOTAL_QUANTITY, USER_ID_PATTERN } from '../domain/coupon.ts';

/** A date-time MySQL can store: years 1000-9999 (src/api/app.ts also checks the instant, offsets included). */
const STORABLE_YEAR_PATTERN = '^[1-9][0-9]{3}-';

/** JSON schemas of the request bodies; the OpenAPI document uses the same ones. Unknown fields are refused. */
export const createEventBody = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'name', 'totalQuantity'],
  properties: {
    id: { type: 'string', pattern: EVENT_ID_PATTERN },
    name: { type: 'string', minLength: 1, maxLength: 200 },
    totalQuantity: { type: 'integer', minimum: 1, maximum: MAX_TOTAL_QUANTITY },
    startsAt: {
      type: 'string', format: 'date-time', pattern: STORABLE_YEAR_PATTERN,
      description: "When issuing opens; absent, now by the gate's clock (Redis TIME), not the api pod's.",
    },
    endsAt: { type: ['string', 'null'], format: 'date-time', pattern: STORABLE_YEAR_PATTERN },
  },
} as const;

export const updateEventBody = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 200 },
    totalQuantity: { type: 'integer', minimum: 1, maximum: MAX_TOTAL_QUANTITY },
    endsAt: { type: ['string', 'null'], format: 'date-time', pattern: STORABLE_YEAR_PATTERN },
    paused: { type: 'boolean' },
  },
} as const;

export const applyBody = {
  type: 'object',
  additionalProperties: false,
  properties: {
    userId: { type: 'string', pattern: USER_ID_PATTERN },
  },
} as const;

export interface CreateEventBody { id: string; name: string; totalQuantity: number; startsAt?: string; endsAt?: string | null }
export interface UpdateEventBody { name?: string; totalQuantity?: number; endsAt?: string | null; paused?: boolean }
export interface ApplyBody { userId?: string }

const ajv = new Ajv({ allErrors: false, strict: true, allowUnionTypes: true });
(addFormatsModule as unknown as { default: (ajv: Ajv) => void }).default(ajv);

export const validateCreateEvent = ajv.compile<CreateEventBody>(createEventBody);
export const validateUpdateEvent = ajv.compile<UpdateEventBody>(updateEventBody);
export const validateApply = ajv.compile<ApplyBody>(applyBody);

/** The first problem ajv found, in words a client can act on. */
export function describeError(validate: ValidateFunction): string {
  const error = validate.errors?.[0];
  if (!error) return 'the body is invalid';
  if (error.keyword === 'additionalProperties') return `unknown field "${String(error.params.additionalProperty)}"`;
  const where = error.instancePath ? error.instancePath.slice(1).replaceAll('/', '.') : 'body';
  return `${where} ${error.message ?? 'is invalid'}`;
}
