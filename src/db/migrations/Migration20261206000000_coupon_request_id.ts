import { Migration } from '@mikro-orm/migrations';

/**
 * The id of the request that was issued each coupon (a client's Idempotency-Key, or the id the api gave a request
 * without one), as the gate recorded it in the user's entry. A gate state restored from MySQL writes it back into
 * the entry, so a retry with the same key is still answered with the first 202 (and a timed-out call can still
 * tell its own coupon). Null for coupons persisted before it was kept. Exact bytes, like every id.
 */
export class Migration20261206000000_coupon_request_id extends Migration {
  override name = 'Migration20261206000000_coupon_request_id';

  override up(): void {
    this.addSql('alter table coupon add column request_id varchar(128) character set utf8mb4 collate utf8mb4_bin null');
  }

  override down(): void {
    this.addSql('alter table coupon drop column request_id');
  }
}
