# A database session with sqlite3: create, insert, index, query.
db=/tmp/db-$SEED.sqlite
rm -f "$db"
n=$((500 + SEED * 300 % 3000))
{
  echo "create table item(id integer primary key, name text, qty int, price real);"
  echo "begin;"
  i=0; while [ $i -lt $n ]; do echo "insert into item(name,qty,price) values('item$i',$((i*7%50)),$((i%97)).5);"; i=$((i+1)); done
  echo "commit;"
  echo "create index item_qty on item(qty);"
  echo "select qty, count(*), avg(price) from item group by qty order by 2 desc limit 5;"
  echo "select sum(qty*price) from item where qty > $((SEED % 40));"
} | sqlite3 "$db" >/dev/null
