import { Migration } from '@mikro-orm/migrations';

/**
 * Ids are exact byte strings: `alice`, `Alice` and `ALICE` are three users, as they are in Redis. The default
 * collations of MariaDB and MySQL 8 compare case- and accent-insensitively, which made the unique keys refuse two
 * of the three coupons and made a coupon read return another user's row. Binary collation on every id column.
 */
export class Migration20261201000000_exact_ids extends Migration {
  override name = 'Migration20261201000000_exact_ids';

  override up(): void {
    this.addSql('alter table coupon_event modify id varchar(64) character set utf8mb4 collate utf8mb4_bin not null');
    this.addSql(`alter table coupon
      modify event_id varchar(64) character set utf8mb4 collate utf8mb4_bin not null,
      modify user_id varchar(64) character set utf8mb4 collate utf8mb4_bin not null`);
  }

  override down(): void {
    // Only safe while no two ids differ in case alone: the unique keys would refuse the narrower comparison.
    this.addSql(`alter table coupon
      modify event_id varchar(64) character set utf8mb4 not null,
      modify user_id varchar(64) character set utf8mb4 not null`);
    this.addSql('alter table coupon_event modify id varchar(64) character set utf8mb4 not null');
  }
}
