@tamper
Feature: Tampering with a run log is evident, even to someone who owns the database
  Someone with full access to the database can switch the log's protection off
  and change anything: edit an event, delete one, reorder them, slip in a forged
  one, cut the log short, even recompute every hash after an edit, and keep the
  run view in step with all of it. What they cannot do is sign: every link of
  the chain and every run's head are signed with a key the database never
  holds, and the engine's workers write each head they commit to a journal
  outside it. Verifying the runs names the tampered run and the first bad
  event, and leaves every other run alone. The same key seals the database's
  own defences (row-level security, the log's triggers and constraints, the
  engine's own database functions, its roles) when the engine migrates it, so
  switching one off is named too.

  Background:
    Given the project "acme" with the workflow "order-sync":
      | step     | type      | does                                 | then                |
      | map      | transform | {id: order.id, total: order.sum}     | push                |
      | push     | http_call | POST the mapped order to /orders     | check               |
      | check    | branch    | when push answered 200               | done, else rejected |
      | done     | terminate | succeeded                            |                     |
      | rejected | terminate | failed: the order service refused it |                     |
    And "acme" delivers 3 order webhooks to "order-sync"
    And every run succeeds

  @smoke
  Scenario: An edited answer from the order service is named
    When someone rewrites the answer to "push" behind the engine's back
    And the runs are verified
    Then verification names the answer to "push" as the first bad event
    And verification finds every other run intact

  @intervention
  Scenario: An operator's skip is chained like any other event: the answer it stood in with, edited, is named
    Given a run of "order-sync" that is failed at "push"
    When "dana@acme.example" skips "push" because "the order was placed by phone", with:
      """json
      { "status": 200, "body": { "orderId": "ord_phone_0042" } }
      """
    And someone rewrites the result of "push" behind the engine's back
    And the runs are verified
    Then verification names the result of "push" as the first bad event
    And verification finds every other run intact

  Scenario: An edited result with every later hash recomputed is still named
    When someone rewrites the result of "map" and recomputes the hash chain behind the engine's back
    And the runs are verified
    Then verification names the result of "map" as the first bad event
    And verification finds every other run intact

  Scenario: An event deleted from the middle of the log is named
    When someone deletes the request of "push" from the run log behind the engine's back
    And the runs are verified
    Then verification names the request of "push" as the first bad event

  Scenario: Two events swapped in the log are named
    When someone swaps the start of "push" and the request of "push" in the run log behind the engine's back
    And the runs are verified
    Then verification names the start of "push" as the first bad event

  Scenario: An event moved into another project is named
    When someone moves the request of "push" into another project behind the engine's back
    And the runs are verified
    Then verification names the request of "push" as the first bad event
    And verification finds every other run intact

  Scenario: A forged event slipped into the log is named
    When someone inserts a forged event after the result of "push" behind the engine's back
    And the runs are verified
    Then verification names the event after the result of "push" as the first bad event

  Scenario: A log cut short, with its run view made to agree, is found cut
    When someone cuts the run log short after the result of "push" behind the engine's back
    And the runs are verified
    Then verification finds the run log cut short after the result of "push"
    And verification finds every other run intact

  Scenario: A log rolled back with a genuine earlier head is found behind the workers' checkpoints
    When someone rolls the run back to the result of "map" behind the engine's back
    And the runs are verified
    Then verification finds the run rolled back behind a checkpoint
    And verification finds every other run intact

  Scenario: A delivery's record deleted behind the engine's back is named
    When someone deletes the record of the run's delivery behind the engine's back
    And the runs are verified
    Then verification finds the record of the run's delivery gone
    And verification finds every other run intact

  Scenario: A delivery whose record was deleted, sent again, is still answered as the run it started
    When someone deletes the record of the run's delivery behind the engine's back
    And the same delivery arrives again
    Then both deliveries belong to one run
    And the order service received the order exactly once

  Scenario: A delivery recorded ahead of its webhook, which would make that webhook count as sent before, is named
    When someone records a delivery that has not arrived yet as the run's, behind the engine's back
    And the runs are verified
    Then verification finds a delivery record that no run names
    And verification finds every run intact

  Scenario: A webhook whose delivery was recorded ahead of it is held back, not dropped as sent before
    Given someone records a delivery that has not arrived yet as the run's, behind the engine's back
    When that delivery arrives
    Then it is refused with 503 "delivery_record_broken"
    And nothing was recorded

  Scenario: The latest version deleted, which would start new runs on the one before, is found behind a checkpoint
    Given "acme" publishes a new version of "order-sync":
      | step     | type      | does                                 | then                |
      | map      | transform | {id: order.id, total: order.sum}     | push                |
      | push     | http_call | POST the mapped order to /orders-v2  | check               |
      | check    | branch    | when push answered 200               | done, else rejected |
      | done     | terminate | succeeded                            |                     |
      | rejected | terminate | failed: the order service refused it |                     |
    And a checkpoint of every run and published version is kept outside the database
    When someone deletes the latest version of "order-sync" behind the engine's back
    And the runs are verified
    Then verification finds version 2 of "order-sync" gone behind a checkpoint

  Scenario: A leave to call private addresses taken back, then written back with its old signature, is found behind a checkpoint
    Given "acme" takes back its leave to call private addresses
    And a checkpoint of every run and published version is kept outside the database
    When someone writes back the leave to call private addresses "acme" took back, behind the engine's back
    And the runs are verified
    Then verification finds the leave to call private addresses of "acme" written back behind a checkpoint

  Scenario Outline: The database's own defences weakened behind the engine's back are named: someone <weakening>
    When someone <weakening> behind the engine's back
    And the runs are verified
    Then verification names the database's defences as weakened
    And verification finds every run intact

    Examples:
      | weakening                                                                 |
      | switches off row-level security on the runs                               |
      | opens a second door through row-level security                            |
      | switches off the run log's append-only protection                         |
      | replaces the run log's gap-free check with one that lets anything through |
      | lets the engine's role bypass row-level security                          |
      | drops the link between events and their run                               |

  Scenario: A run whose whole log was deleted is found empty
    When someone empties the run log behind the engine's back
    And the runs are verified
    Then verification finds the run log empty

  Scenario: A log cut short is refused by rebuild, which never sends the order again
    When someone cuts the run log short after the request of "push" behind the engine's back
    And the run views are rebuilt from the log
    Then rebuilding refuses the run because "head"
    And the run view is unchanged
    And the order service saw 1 attempt but took the order once

  Scenario: Deleting a recorded event is refused by the database itself
    When someone tries to delete the result of "map" from the run log
    Then the database refuses because "run_events is append-only"
    And the run replays exactly from its log

  Scenario: The engine's own database role cannot switch the log's protection off
    When the engine's own role tries to switch the log's protection off
    Then the database refuses because "must be owner of table run_events"
    And the run replays exactly from its log

  Scenario Outline: A run view marked <status> behind the engine's back is caught by replay
    When someone marks the run as <status> behind the engine's back
    And the run is replayed
    Then replay says the run view differs from the log in "status"

    Examples:
      | status   |
      | running  |
      | waiting  |
      | paused   |
      | failed   |
      | canceled |

  Scenario Outline: A run view marked <status> behind the engine's back is rebuilt from its log
    When someone marks the run as <status> behind the engine's back
    And the run views are rebuilt from the log
    Then rebuilding repaired the run
    And the run replays exactly from its log

    Examples:
      | status   |
      | running  |
      | paused   |
      | canceled |
