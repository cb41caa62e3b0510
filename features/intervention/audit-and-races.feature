@intervention
Feature: Operator actions are audited, and hold against workers and crashes
  Who changed a run, when and why is part of its log, in order, for anyone who
  reads its history later. An action lands between a worker's steps, never in
  the middle of one: a worker busy with the run when the action lands loses
  its place and the run ends as the action says, and an order that was ready
  to go but held up is not sent for a run canceled or paused meanwhile; a worker that dies right
  after an action leaves a run the next worker finishes as the action says.
  Like a worker, the operator's command keeps the head it commits outside
  the database, so an action cannot be quietly taken back out of the log.

  Background:
    Given the project "acme" with the workflow "order-sync":
      | step     | type      | does                                                                     | then                |
      | map      | transform | {id: order.id, total: order.sum}                                         | push                |
      | push     | http_call | POST the mapped order to /orders, up to 2 attempts, backing off 1 minute | check               |
      | check    | branch    | when push answered 200                                                   | done, else rejected |
      | done     | terminate | succeeded                                                                |                     |
      | rejected | terminate | failed: the order service refused it                                     |                     |
    And the project "acme" with the workflow "order-follow-up":
      | step   | type      | does                         | then   |
      | wait   | delay     | wait 1 hour                  | remind |
      | remind | http_call | POST the order to /reminders | done   |
      | done   | terminate | succeeded                    |        |

  @smoke
  Scenario: The audit trail tells who did what to a run, when and why
    Given a run of "order-follow-up" that is paused in "wait"
    When "lee@acme.example" patches the run's input because "the customer added a line", with:
      """json
      { "order": { "sum": 99.9 } }
      """
    And "dana@acme.example" unpauses the run because "the review is done"
    And the clock moves forward 2 hours
    Then the run's audit trail reads:
      | what          | by                | reason                    |
      | run started   |                   |                           |
      | pause         | ops@acme.example  | held for review           |
      | patch         | lee@acme.example  | the customer added a line |
      | unpause       | dana@acme.example | the review is done        |
      | run succeeded |                   |                           |

  Scenario: An operator cancels a run while its worker waits for the order service, and the cancel stands
    Given the worker will stall after the request of "push" is sent
    When "acme" delivers an order webhook to "order-sync"
    And "dana@acme.example" cancels the run during that pause, because "the customer withdrew the order"
    Then the run is canceled
    And the run replays exactly from its log

  Scenario: An operator cancels a run whose order is ready to go but not yet sent, and the order is never sent
    Given the worker will stall before the request of "push" is sent
    When "acme" delivers an order webhook to "order-sync"
    And "dana@acme.example" cancels the run during that pause, because "the customer withdrew the order"
    Then the run is canceled
    And the order service was never called

  Scenario: An operator skips a call whose order is ready to go but not yet sent, and the order is never sent
    Given the worker will stall before the request of "push" is sent
    When "acme" delivers an order webhook to "order-sync"
    And "dana@acme.example" skips "push" during that pause, because "the order was placed by phone", with:
      """json
      { "status": 200, "body": { "orderId": "ord_phone_0042" } }
      """
    Then the run succeeds
    And the order service was never called

  Scenario: An operator pauses a run whose order is ready to go; it goes out once, when the run is unpaused
    Given the worker will stall before the request of "push" is sent
    When "acme" delivers an order webhook to "order-sync"
    And "dana@acme.example" pauses the run during that pause, because "hold the order for a fraud check"
    And "dana@acme.example" unpauses the run because "the fraud check is done"
    Then the run succeeds
    And the order service saw 1 attempt but took the order once

  Scenario: An operator cancels a run while its worker is recording the order service's answer, and the cancel lands before the next step
    Given the worker will stall while the response of "push" is being recorded
    When "acme" delivers an order webhook to "order-sync"
    And "dana@acme.example" cancels the run during that pause, because "the customer withdrew the order"
    Then the run is canceled
    And the run replays exactly from its log

  Scenario: An operator pauses a run while its worker waits for the order service; the answer is kept and nothing more happens
    Given the worker will stall after the request of "push" is sent
    When "acme" delivers an order webhook to "order-sync"
    And "dana@acme.example" pauses the run during that pause, because "hold the order for a fraud check"
    Then the run is paused
    And the run replays exactly from its log

  Scenario: A worker dies right after an operator retried the run's call, and the next worker finishes it as retried
    Given a run of "order-sync" that is left in the middle of "push" by a crashed worker
    And the next worker to start will crash after the request of "push" is sent
    When "dana@acme.example" retries "push" because "the worker host went away"
    And a new worker takes over
    Then the run succeeds
    And the order service saw 3 attempts but took the order once

  Scenario: A worker dies after sending a reminder an operator let go early, and the next worker sends it once
    Given a run of "order-follow-up" that is waiting in "wait"
    And the worker will crash after the request of "remind" is sent
    When "dana@acme.example" skips "wait" because "the customer asked for the reminder now"
    And a new worker takes over
    Then the run succeeds
    And the order service saw 2 attempts but took the order once

  @tamper
  Scenario Outline: An operator's action taken back out of the log by someone with the database is found: <action> the run
    Given a run of "order-follow-up" that is waiting in "wait"
    And "dana@acme.example" <action> the run because "the customer withdrew the order"
    When someone rolls the run back to the timer of "wait" behind the engine's back
    And the runs are verified
    Then verification finds the run rolled back behind a checkpoint

    Examples:
      | action  |
      | cancels |
      | pauses  |

  @tamper
  Scenario: An operator's pause taken back out of the log is not undone by the engine: the run is held, not carried on
    Given a run of "order-follow-up" that is waiting in "wait"
    And "dana@acme.example" pauses the run because "hold the order for a fraud check"
    When someone rolls the run back to the timer of "wait" behind the engine's back
    And a worker starts
    And the clock moves forward 2 hours
    Then the engine refuses to carry the run on because "checkpoint"
    And the order service was never called

  @db-crash
  Scenario: A run resumed by an operator goes on through a database crash, its worker held up between steps
    Given a run of "order-sync" that is failed at "push"
    And the worker will stall after step "map" is recorded
    When "dana@acme.example" resumes the run from "map" because "the order service fixed its side"
    And the database crashes and restarts
    Then the run succeeds
    And "push" was sent again under a new idempotency key
    And the run replays exactly from its log

  Scenario: A follow-up corrected while it waited is sent corrected by the worker that takes over when its timer's worker dies
    Given a run of "order-follow-up" that is waiting in "wait"
    And the worker will crash when the timer of "wait" fires
    When "lee@acme.example" patches the run's input because "the customer changed the total", with:
      """json
      { "order": { "sum": 99.9 } }
      """
    And the clock moves forward 2 hours
    And a new worker takes over
    Then the run succeeds with the timer of "wait" fired once
    And the order service received an order worth 99.9

  @crash
  Scenario: A run resumed by an operator whose worker dies after the call is finished by the next worker under the new key
    Given a run of "order-sync" that is failed at "push"
    And the worker will crash after the request of "push" is sent
    When "dana@acme.example" resumes the run from "push" because "the order service fixed its side"
    And a new worker takes over
    Then the run succeeds
    And "push" was sent again under a new idempotency key
    And the order service saw 3 attempts but took the order once

  @db-faults
  Scenario: A correction that lands after the call was prepared does not change the order already committed to be sent
    Given the worker will stall before the request of "push" is sent
    When "acme" delivers an order webhook to "order-sync"
    And "lee@acme.example" patches the run's input during that pause, because "the customer changed the total", with:
      """json
      { "order": { "sum": 99.9 } }
      """
    And the network to the database is cut
    Then the run succeeds
    And the order service received an order worth 42.5
    And the order service received the order exactly once

  Scenario: The audit trail of a run held for review and let go reads who held it and who let it go
    Given a run of "order-follow-up" that is paused in "wait"
    When "dana@acme.example" unpauses the run because "the review is done"
    And the clock moves forward 2 hours
    Then the run's audit trail reads:
      | what          | by                | reason             |
      | run started   |                   |                    |
      | pause         | ops@acme.example  | held for review    |
      | unpause       | dana@acme.example | the review is done |
      | run succeeded |                   |                    |

  Scenario: The audit trail of a follow-up canceled by mistake and resumed reads both, and the run's two ends
    Given a run of "order-follow-up" that is waiting in "wait"
    When "dana@acme.example" cancels the run because "canceled the wrong order"
    And "lee@acme.example" resumes the run from "wait" because "the customer still wants the reminder"
    And the clock moves forward 2 hours
    Then the run succeeds
    And the order service received the order exactly once
    And the run's audit trail reads:
      | what          | by                | reason                                                  |
      | run started   |                   |                                                         |
      | cancel        | dana@acme.example | canceled the wrong order                                |
      | run canceled  |                   | canceled by dana@acme.example: canceled the wrong order |
      | resume        | lee@acme.example  | the customer still wants the reminder                   |
      | run succeeded |                   |                                                         |

  @db-crash
  Scenario: An operator cancels a run held up between steps while the database crashes, and the order is never sent
    Given the worker will stall after step "map" is recorded
    When "acme" delivers an order webhook to "order-sync"
    And the database crashes and restarts
    And "dana@acme.example" cancels the run during that pause, because "the customer withdrew the order"
    Then the run is canceled
    And the order service was never called
    And the run replays exactly from its log

  @db-faults
  Scenario: An operator's skip asked for while the order service's answer is being recorded finds the call done, and is refused
    Given the worker will stall while the response of "push" is being recorded
    When "acme" delivers an order webhook to "order-sync"
    And "dana@acme.example" tries to skip "push" during that pause, because "the order was placed by phone"
    Then the action is refused because "is not the step the run is at"
    And the run succeeds
    And the order service received the order exactly once
    And the run's audit trail reads:
      | what          | by | reason |
      | run started   |    |        |
      | run succeeded |    |        |
