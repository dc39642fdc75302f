import { Migration } from '@mikro-orm/migrations';

/** coupon_event and coupon, written by hand in SQL that MySQL 8 and MariaDB both accept. */
export class Migration20261125000000_initial extends Migration {
  override name = 'Migration20261125000000_initial';

  override up(): void {
    this.addSql(`create table if not exists coupon_event (
      id varchar(64) not null,
      name varchar(200) not null,
      total_quantity int unsigned not null,
      starts_at datetime(3) not null,
      ends_at datetime(3) null,
      created_at datetime(3) not null default current_timestamp(3),
      primary key (id)
    ) default character set utf8mb4 engine = InnoDB`);
    this.addSql(`create table if not exists coupon (
      id bigint unsigned not null auto_increment,
      event_id varchar(64) not null,
      user_id varchar(64) not null,
      sequence int unsigned not null,
      issued_at datetime(3) not null,
      created_at datetime(3) not null default current_timestamp(3),
      primary key (id),
      unique key coupon_event_user_unique (event_id, user_id),
      unique key coupon_event_sequence_unique (event_id, sequence),
      key coupon_created_at_index (created_at)
    ) default character set utf8mb4 engine = InnoDB`);
  }

  override down(): void {
    this.addSql('drop table if exists coupon');
    this.addSql('drop table if exists coupon_event');
  }
}
